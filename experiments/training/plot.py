"""Curves of a `jaxvoc train` run: validation mel L1 (validation.jsonl) and training losses (metrics.jsonl);
for the codec also the codebook usage of its validation (fraction of codes used, perplexity, per codebook).

    python -m experiments.training.plot RUN_DIR OUT.png [--title T] [--loss KEY ...]

Prints the validation curve as a table too.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys

# the validation mel L1 by model: BigVGAN / WaveGlow (loop.Validator), the codec (NeMo's val_loss_mel_l1)
VAL_MEL = ("mel_spec_error", "val_loss_mel_l1")
LOSSES = ("loss_mel", "loss_disc_all", "loss", "loss_gen_all", "d_loss", "g_loss_mel_l1")
CODEBOOK = re.compile(r"codebook(\d+)_(used|perplexity)$")


def read_jsonl(path: str) -> list[dict]:
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def training_curve(met: list[dict], key: str) -> tuple[list, list]:
    """(steps, values) of a training metric; a discriminator loss only at the steps that updated the
    discriminator (the codec's schedule skips it on some steps, where it reads 0)."""
    rows = [r for r in met if key in r and not (key.startswith(("d_loss", "loss_disc")) and
                                                 r.get("disc_updated", 1.0) == 0.0)]
    return [r["step"] for r in rows], [r[key] for r in rows]


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
    vkey = next(k for k in VAL_MEL if k in val[0])
    keys = args.loss or [k for k in LOSSES if k in met[0]]
    if "d_loss" in keys and "loss_disc_all" in keys:  # the codec: NeMo's d_loss is the generic step's loss_disc_all
        keys.remove("loss_disc_all")
    books = sorted({int(m.group(1)) for k in val[0] for m in [CODEBOOK.match(k)] if m})
    usage = [("used", "codes used (fraction, validation)"), ("perplexity", "code perplexity (validation)")]
    n = 1 + len(keys) + (len(usage) if books else 0)
    cols = n if n <= 4 else 3
    rows = -(-n // cols)
    fig, grid = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.4 * rows), squeeze=False)
    axes = list(grid.flat)
    for ax in axes[n:]:
        ax.set_visible(False)
    axes = axes[:n]
    axes[0].plot([r["step"] for r in val], [r[vkey] for r in val], "o-")
    axes[0].set_title("validation mel L1 (held-out clips)")
    for ax, k in zip(axes[1:], keys):
        ax.plot(*training_curve(met, k))
        ax.set_title(f"training {k}")
    if books:
        for ax, (what, title) in zip(axes[1 + len(keys):], usage):
            for c in books:
                ax.plot([r["step"] for r in val], [r[f"codebook{c}_{what}"] for r in val], "o-", ms=3,
                        label=f"codebook {c}")
            ax.set_title(title)
            ax.legend(fontsize=8)
    for ax in axes:
        ax.set_xlabel("step")
    if args.title:
        fig.suptitle(args.title)
    fig.tight_layout()
    fig.savefig(args.out, dpi=90)
    table = [vkey] + [f"codebook{c}_{w}" for c in books for w, _ in usage]
    print("step  " + "  ".join(table))
    for r in val:
        print(f"{r['step']:5d}  " + "  ".join(f"{r[k]:.4f}" for k in table))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
