"""jaxvoc: JAX/Flax ports of NVIDIA's BigVGAN, WaveGlow and Low Frame-rate Speech Codec.

``jaxvoc.load(ckpt_dir)`` returns a ready-to-call model from a folder written by ``jaxvoc convert``.
"""

from __future__ import annotations

__version__ = "0.1.0"


def load(ckpt_dir: str, fold: bool = True, dtype: str = "float32"):
    """Loads a jaxvoc checkpoint folder: returns the model's ``Pretrained`` object (config + params).
    ``dtype``: the vocoders (BigVGAN, WaveGlow) also synthesize in ``"bfloat16"`` (docs/bigvgan.md)."""
    from jaxvoc.errors import UserError
    from jaxvoc.io.checkpoint import read_meta
    from jaxvoc.registry import model_module

    meta = read_meta(ckpt_dir)
    cls = model_module(meta["kind"]).Pretrained
    dtypes = getattr(cls, "dtypes", ("float32",))
    if dtype not in dtypes:
        raise UserError(f"dtype {dtype!r} is not available for a {meta['kind']} model; use one of {', '.join(dtypes)}")
    options = {} if dtype == "float32" else {"dtype": dtype}
    return cls.from_checkpoint(ckpt_dir, meta, fold=fold, **options)
