"""jaxvoc: JAX/Flax ports of NVIDIA's BigVGAN, WaveGlow and Low Frame-rate Speech Codec.

``jaxvoc.load(ckpt_dir)`` returns a ready-to-call model from a folder written by ``jaxvoc convert``.
"""

from __future__ import annotations

__version__ = "0.1.0"


def load(ckpt_dir: str, fold: bool = True):
    """Loads a jaxvoc checkpoint folder: returns the model's ``Pretrained`` object (config + params)."""
    from jaxvoc.io.checkpoint import read_meta
    from jaxvoc.registry import model_module

    meta = read_meta(ckpt_dir)
    return model_module(meta["kind"]).Pretrained.from_checkpoint(ckpt_dir, meta, fold=fold)
