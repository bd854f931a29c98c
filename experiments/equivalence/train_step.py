"""The jaxvoc BigVGAN train step against iterations of the official train.py loop body, with the official
float32-vs-float64 rounding as reference (experiments/reference/train_reference.py), for small v1 and v2 configs.

    python -m experiments.equivalence.train_step [--configs bigvgan_24khz_100band bigvgan_v2_24khz_100band_256x]

Two iterations (freeze_step=1: the first frozen), lr_decay 0.9, clip_grad_norm 1.0, learning rate 1e-3, two
speech segments of 4096 samples. Prints, per config: the worst loss difference of each step and the update
agreement (cosine, relative norm difference, relative error) per parameter group, each beside the
official code's own float32 rounding.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np



def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--configs", nargs="+", default=["bigvgan_24khz_100band", "bigvgan_v2_24khz_100band_256x"])
    args = p.parse_args(argv)

    from experiments.reference.bigvgan_train import small_config
    from experiments.reference.train_reference import compare_train_steps
    from jaxvoc.io.audio import load_audio

    from experiments import fixture

    y = load_audio(fixture("speech_24000.wav"), 24000)
    segments = np.stack([y[5000:9096], y[30000:34096]])
    for name in args.configs:
        h = small_config(name, lr_decay=0.9, clip_grad_norm=1.0, learning_rate=1e-3)
        rep = compare_train_steps(h, segments, steps=2, freeze_step=1, float64=True)
        print(f"\n{name} (small): 2 steps, the first frozen")
        for s, row in enumerate(rep["losses"]):
            worst = max(row, key=lambda k: row[k]["jax_vs_32"])
            r = row[worst]
            print(f"  step {s} losses: worst {worst} rel err jax-vs-official32 {r['jax_vs_32']:.1e} "
                  f"(official 32-vs-64 {r['32_vs_64']:.1e}); all {len(row)} terms <= {r['jax_vs_32']:.1e}")
        for grp, row in rep["updates"].items():
            a, b = row["jax_vs_32"], row["32_vs_64"]
            print(f"  updates {grp:3s}: 1-cos {1 - a['cos']:.1e} norm diff {a['norm_diff']:.1e} rel err "
                  f"{a['rel_err']:.1e}   (official 32-vs-64: 1-cos {1 - b['cos']:.1e} norm diff "
                  f"{b['norm_diff']:.1e} rel err {b['rel_err']:.1e})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
