"""Curves of a `jaxvoc train` run: validation mel L1 (validation.jsonl) and training losses (metrics.jsonl).

    python -m experiments.training.plot RUN_DIR OUT.png [--title T] [--loss KEY ...]

Prints the validation curve as a table too.
"""

from __future__ import annotations

import argparse
import json
import os
import sys


def read_jsonl(path: str) -> list[dict]:
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("run_dir")
    p.add_argument("out")
    p.add_argument("--title", default=None)
    p.add_argument("--loss", nargs="*", default=None, help="training metrics to plot (default: by model)")
    args = p.parse_args(argv)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    val = read_jsonl(os.path.join(args.run_dir, "validation.jsonl"))
    met = read_jsonl(os.path.join(args.run_dir, "metrics.jsonl"))
    keys = args.loss or [k for k in ("loss_mel", "loss_disc_all", "loss") if k in met[0]]
    fig, axes = plt.subplots(1, 1 + len(keys), figsize=(4.2 * (1 + len(keys)), 3.4))
    axes[0].plot([r["step"] for r in val], [r["mel_spec_error"] for r in val], "o-")
    axes[0].set_title("validation mel L1 (held-out clips)")
    axes[0].set_xlabel("step")
    for ax, k in zip(axes[1:], keys):
        ax.plot([r["step"] for r in met], [r[k] for r in met])
        ax.set_title(f"training {k}")
        ax.set_xlabel("step")
    if args.title:
        fig.suptitle(args.title)
    fig.tight_layout()
    fig.savefig(args.out, dpi=90)
    print("step  validation mel L1")
    for r in val:
        print(f"{r['step']:5d}  {r['mel_spec_error']:.4f}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
