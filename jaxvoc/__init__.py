"""jaxvoc: JAX/Flax ports of NVIDIA's BigVGAN, WaveGlow and Low Frame-rate Speech Codec.

``jaxvoc.load(ckpt_dir)`` returns a ready-to-call model from a folder written by ``jaxvoc convert``.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

# model kind -> module defining ``Pretrained.from_checkpoint(ckpt_dir, meta, fold=True)``
KINDS = {
    "bigvgan": "jaxvoc.bigvgan",
    "waveglow": "jaxvoc.waveglow",
    "codec": "jaxvoc.codec",
}


def model_module(kind: str):
    from jaxvoc.errors import UserError

    if kind not in KINDS:
        raise UserError(f"unknown model kind {kind!r}; known: {', '.join(sorted(KINDS))}")
    return importlib.import_module(KINDS[kind])


def load(ckpt_dir: str, fold: bool = True):
    """Loads a jaxvoc checkpoint folder: returns the model's ``Pretrained`` object (config + params)."""
    from jaxvoc.checkpoint import read_meta

    meta = read_meta(ckpt_dir)
    return model_module(meta["kind"]).Pretrained.from_checkpoint(ckpt_dir, meta, fold=fold)
