"""bfloat16 synthesis (``jaxvoc.load(..., dtype="bfloat16")``, ``jaxvoc synth --dtype bfloat16``): its SNR against
the official float32 output, for BigVGAN v2 24 kHz and WaveGlow at their published sizes, on the CPU.

    python -m experiments.equivalence.bf16 [--frames 128] [--seconds 1.5] [--json FILE]

The same measurement as the GPU check's equivalence stages (experiments/gpu_check.py; stand-in weights from
the official code, converted through the published file formats, the bundled speech): per model one row of
jaxvoc float32 and one of jaxvoc bfloat16, each against the official float32 and float64 outputs. No bar applies
to bfloat16 (8 significant bits: ~50 dB per rounding); tests/test_bf16.py holds a regression floor below the
figures measured here.
"""

from __future__ import annotations

import argparse
import sys


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--frames", type=int, default=128, help="BigVGAN mel frames")
    p.add_argument("--seconds", type=float, default=1.5, help="WaveGlow speech seconds")
    p.add_argument("--models", default="bigvgan,waveglow")
    p.add_argument("--json", help="write the rows here")
    args = p.parse_args(argv)

    import warnings

    warnings.filterwarnings("ignore")
    import jax
    import torch

    from conversion import report as rp
    from experiments import gpu_check

    sizes = gpu_check.Sizes(dry=False, device="cpu")
    sizes.bigvgan_frames, sizes.waveglow_seconds = args.frames, args.seconds
    rows = []
    for name in args.models.split(","):
        rows += getattr(gpu_check, f"equivalence_{name}")(sizes)
    print("| model | jaxvoc dtype | SNR vs official fp32 | vs official fp64 | official fp32 vs fp64 |")
    print("|---|---|---|---|---|")
    for r in rows:
        dtype = "bfloat16" if "bfloat16" in r["precision"] else "float32"
        print(f"| {r['model']} ({r['config']}) | {dtype} | {r['snr_jax_vs_official']:.1f} dB | "
              f"{r['snr_jax_vs_fp64']:.1f} dB | {r['snr_official_vs_fp64']:.1f} dB |")
    if args.json:
        rp.write_json(args.json, {"command": "python -m experiments.equivalence.bf16 " + " ".join(argv or sys.argv[1:]),
                                  "jax": jax.__version__, "torch": torch.__version__, "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
