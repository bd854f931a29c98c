"""Loss and gradient equivalence of jaxvoc's BigVGAN GAN objective with one step of the official
bigvgan/train.py, and the official float32-vs-float64 rounding for scale.

    python -m experiments.equivalence.gan [--configs NAME,...] [--size small|official-d] [--json OUT]

For each config (default: bigvgan_24khz_100band = v1, MPD + MRD + mel L1; bigvgan_v2_24khz_100band_256x =
v2, MPD + CQTD + multi-scale mel loss) builds the official generator and discriminators with random weights,
one batch of two speech segments (the official loader's normalisation and mels), runs one official step in
float32 and float64 and the same step through BigVGANObjective (experiments/reference/bigvgan_train.py), and prints
per loss term the relative errors jax-vs-torch32, torch32-vs-torch64 and jax-vs-torch64, and per gradient
group (generator g, mpd, mrd) 1 - cosine similarity, the relative norm difference and ‖a-b‖/‖b‖.

--size small: the test configs (small_config: 1/8-wide MPD with periods [2, 3], 8-16 filter CQTD, hop-64
generator, 4096 samples); official-d: discriminators and losses as published, small generator, 8192 samples.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time


import numpy as np  # noqa: E402
from experiments import fixture

DEFAULT = "bigvgan_24khz_100band,bigvgan_v2_24khz_100band_256x"
LOSS_REL, GRAD_COS, GRAD_NORM = 1e-5, 1e-5, 1e-4  # issue 5, item 5


def segments(sr: int, length: int, batch: int = 2) -> np.ndarray:
    from jaxvoc.io.audio import load_audio

    a = load_audio(fixture(f"speech_{sr}.wav"), sr)
    starts = np.linspace(2000, len(a) - length - 2000, batch).astype(int)
    return np.stack([a[s:s + length] for s in starts])


def report(name: str, result: dict) -> bool:
    ok = True
    print(f"\n{name}: generated audio jax vs torch32 SNR {result['audio_snr_db']:.1f} dB")
    print(f"  {'loss term':<14}{'value':>12}{'jax-vs-32':>12}{'32-vs-64':>12}{'jax-vs-64':>12}{'bound':>10}")
    for term, r in result["losses"].items():
        bound = max(LOSS_REL, 2 * r["32_vs_64"])
        ok &= r["jax_vs_32"] <= bound
        print(f"  {term:<14}{r['torch32']:>12.5g}{r['jax_vs_32']:>12.2e}{r['32_vs_64']:>12.2e}"
              f"{r['jax_vs_64']:>12.2e}{bound:>10.1e}")
    print(f"  {'gradient':<10}{'params':>9}  {'1-cos jax/32':>13}{'32/64':>10}{'jax/64':>10}   "
          f"{'norm diff jax/32':>16}{'32/64':>10}{'jax/64':>10}   {'rel err jax/32':>14}{'32/64':>10}")
    for group, r in result["grads"].items():
        a, b, c = r["jax_vs_32"], r["32_vs_64"], r["jax_vs_64"]
        ok &= 1 - a["cos"] <= max(GRAD_COS, 2 * (1 - b["cos"])) and a["norm_diff"] <= max(GRAD_NORM, 2 * b["norm_diff"])
        print(f"  {group:<10}{a['size']:>9}  {1 - a['cos']:>13.2e}{1 - b['cos']:>10.2e}{1 - c['cos']:>10.2e}   "
              f"{a['norm_diff']:>16.2e}{b['norm_diff']:>10.2e}{c['norm_diff']:>10.2e}   "
              f"{a['rel_err']:>14.2e}{b['rel_err']:>10.2e}")
    return bool(ok)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--configs", default=DEFAULT, help=f"official config names (default {DEFAULT})")
    p.add_argument("--size", choices=("small", "official-d"), default="official-d")
    p.add_argument("--json", help="write all figures to this JSON file")
    args = p.parse_args(argv)

    import torch

    from experiments.reference.bigvgan_train import measure_equivalence, official_discriminator_config, small_config

    make = small_config if args.size == "small" else official_discriminator_config
    print(f"gan_equivalence: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"torch {torch.__version__} ({torch.get_num_threads()} threads), size {args.size}")
    all_ok, out = True, {}
    for name in args.configs.split(","):
        config = make(name)
        t0 = time.time()
        res = measure_equivalence(config, segments(config["sampling_rate"], config["segment_size"]), steps=(0,))[0]
        all_ok &= report(f"{name} ({args.size}, segment {config['segment_size']}, batch 2)", res)
        print(f"  ({time.time() - t0:.0f} s)")
        out[name] = res
    print("\nall within the bounds of issue 5 item 5" if all_ok else "\nSOME FIGURES EXCEED THE BOUNDS")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
    return 0 if all_ok else 1


if __name__ == "__main__":
    sys.exit(main())
