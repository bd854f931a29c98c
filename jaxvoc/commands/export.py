"""jaxvoc export CKPT OUT_DIR: a jaxvoc checkpoint back to the official PyTorch formats, so that a model
converted or trained in JAX runs in NVIDIA's code.

CKPT is a jaxvoc checkpoint (jaxvoc convert, or the export/ folder jaxvoc train writes at the end of a run) or
a jaxvoc training run folder (its latest checkpoint: weights, discriminators, optimizer moments and step).
OUT_DIR receives:

  bigvgan   config.json + bigvgan_generator.pt ({"generator": state_dict}), and, when the checkpoint holds
            the discriminators, bigvgan_discriminator_optimizer.pt as the official train.py writes it
            ({"mpd", "mrd", "optim_g", "optim_d", "steps", "epoch"})
  waveglow  waveglow.pt ({"state_dict": state_dict} for waveglow.glow.WaveGlow) + config.json
            (waveglow_config, data_config)
  codec     model.nemo, which NeMo's AudioCodecModel.restore_from loads

Every tensor is written as stored (bitwise); weight norm in the key style of the source when the checkpoint
recorded one, else the official code's. The whole OUT_DIR appears at the end or not at all. Needs the
conversion extra (torch + the official package, which checks the exported state dicts)."""

from __future__ import annotations

import os
import time

from jaxvoc.errors import UserError
from jaxvoc.registry import converter_module, is_missing_official, missing_package


def add_arguments(p):
    p.add_argument("ckpt", help="jaxvoc checkpoint folder, or a jaxvoc training run folder (its latest checkpoint)")
    p.add_argument("out_dir", help="folder to write (must not exist unless --overwrite)")
    p.add_argument("--overwrite", action="store_true", help="replace OUT_DIR if it exists")


def read_checkpoint(ckpt: str) -> tuple[str, dict, dict, str]:
    """(kind, config, trees, what) of a jaxvoc checkpoint or of a training run folder's latest checkpoint."""
    from jaxvoc.io import checkpoint

    if os.path.isdir(ckpt) and not os.path.exists(os.path.join(ckpt, checkpoint.META)):
        from jaxvoc.train.checkpointing import is_run_folder
        from jaxvoc.train.tasks import run_folder_trees

        if is_run_folder(ckpt):
            kind, config, trees, step = run_folder_trees(ckpt)
            return kind, config, trees, f"training run step {step}"
    meta = checkpoint.read_meta(ckpt)
    exporter(meta["kind"])  # before the trees are read
    trees = {name: checkpoint.load_tree(ckpt, name) for name in meta.get("trees", ["params"])}
    return meta["kind"], meta["config"], trees, "checkpoint"


def exporter(kind: str):
    """The converter module of ``kind``, which writes the official format (``export``)."""
    mod = converter_module(kind)
    if not hasattr(mod, "export"):
        raise UserError(f"{kind} models cannot be exported to an official format yet (jaxvoc export takes "
                        "bigvgan, waveglow and codec checkpoints)")
    return mod


def run(args) -> int:
    from jaxvoc.io.atomic import atomic_dir, check_writable_dir

    t0 = time.time()
    out = os.path.abspath(args.out_dir)
    if os.path.exists(out) and not args.overwrite:
        raise UserError(f"{out} exists; remove it or pass --overwrite")
    check_writable_dir(os.path.dirname(out))
    kind, config, trees, what = read_checkpoint(args.ckpt)
    mod = exporter(kind)
    try:
        with atomic_dir(out, args.overwrite) as tmp:
            files = mod.export(config, trees, tmp, args.ckpt)
    except ImportError as e:  # torch and the official package, imported lazily
        if is_missing_official(e):
            raise missing_package(e) from None
        raise
    print(f"exported {kind} {args.ckpt} ({what}) -> {out}: {', '.join(files)} in {time.time() - t0:.1f} s")
    return 0
