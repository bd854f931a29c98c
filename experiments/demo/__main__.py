"""`make demo`: convert a BigVGAN model, synthesize the bundled speech sample in JAX and in PyTorch, print the
equivalence table and write the wavs and the comparison PNG under demo_out/.

    python -m experiments.demo [--ckpt MODEL_DIR] [--config NAME] [--out demo_out]

Without --ckpt, a stand-in model folder in the published layout (config.json + bigvgan_generator.pt) is built
with the official `bigvgan` package and random weights (fixed seed): the hubs that hold NVIDIA's trained
weights are unreachable here. Random weights turn any mel into noise-like audio, so listen to the wavs only
to hear that the two frameworks agree; with --ckpt pointing at a real downloaded model the same code path
gives speech.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import types



def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--ckpt", help="an official BigVGAN model folder (config.json + bigvgan_generator.pt)")
    p.add_argument("--config", default="bigvgan_v2_24khz_100band_256x", help="official config of the stand-in")
    p.add_argument("--out", default="demo_out", help="output folder")
    args = p.parse_args(argv)

    from jaxvoc import cli
    from jaxvoc.errors import UserError

    try:
        return run(args, cli)
    except UserError as e:
        print(f"demo: error: {e}", file=sys.stderr)
        return 2


def run(args, cli) -> int:
    import warnings

    warnings.filterwarnings("ignore", category=FutureWarning)
    from conversion import bigvgan as cb
    from conversion import report as rp
    from jaxvoc.io.audio import BUNDLED_SPEECH, write_audio
    from jaxvoc.models.bigvgan import BigVGANConfig

    os.makedirs(args.out, exist_ok=True)
    src = args.ckpt
    if src is None:
        src = os.path.join(args.out, f"standin_{args.config}")
        if not os.path.exists(os.path.join(src, cb.GENERATOR_FILE)):
            t = time.time()
            cb.write_official_folder(src, BigVGANConfig.official(args.config).to_dict(), seed=0)
            print(f"[1/4] built a stand-in official model folder {src} (official bigvgan package, random weights, "
                  f"seed 0) in {time.time() - t:.0f} s")
        else:
            print(f"[1/4] stand-in official model folder {src} already there")
    else:
        print(f"[1/4] using your model folder {src}")
    ckpt = os.path.join(args.out, "jaxvoc_ckpt")
    print(f"[2/4] jaxvoc convert bigvgan {src} {ckpt}")
    rc = cli.main(["convert", "bigvgan", src, ckpt, "--overwrite"])
    if rc:
        return rc
    sample = BUNDLED_SPEECH
    print(f"[3/4] jaxvoc synth {ckpt} {os.path.basename(sample)}  (the CLI path; output in {args.out}/synth)")
    rc = cli.main(["synth", ckpt, sample, "-o", os.path.join(args.out, "synth"), "--no-bucket"])
    if rc:
        return rc
    print("[4/4] official PyTorch vs jaxvoc on the mel of the bundled speech sample")
    res = cb.compare(types.SimpleNamespace(src=src, input=None, device="cpu", repeats=1, config=None))
    rp.print_table(res["rows"], "bigvgan: official PyTorch vs jaxvoc (cpu, float32)")
    sr = res["sampling_rate"]
    write_audio(os.path.join(args.out, "pytorch.wav"), res["reference"], sr, "FLOAT")
    write_audio(os.path.join(args.out, "jax.wav"), res["jax"], sr, "FLOAT")
    rp.spectrogram_png(os.path.join(args.out, "comparison.png"), res["reference"], res["jax"], res["mel_config"],
                       res["title"])
    rp.write_json(os.path.join(args.out, "report.json"), {k: v for k, v in res.items() if isinstance(v, (int, float))})
    print(f"wrote {args.out}/pytorch.wav, {args.out}/jax.wav, {args.out}/comparison.png, {args.out}/report.json")
    if args.ckpt is None:
        print("note: stand-in random weights make noise-like audio; run `make demo CKPT=/path/to/model_dir` "
              "with a downloaded BigVGAN model to hear speech")
    return 0


if __name__ == "__main__":
    sys.exit(main())
