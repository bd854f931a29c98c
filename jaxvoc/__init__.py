"""jaxvoc: JAX/Flax ports of NVIDIA's BigVGAN, WaveGlow and Low Frame-rate Speech Codec.

``jaxvoc.load(ckpt_dir)`` returns a ready-to-call model from a folder written by ``jaxvoc convert``, or from
an official Hugging Face Hub repo id (``jaxvoc.load("nvidia/bigvgan_v2_24khz_100band_256x")``).
"""

from __future__ import annotations

__version__ = "0.1.0"


def load(ckpt_dir: str, fold: bool = True, revision: str | None = None, kind: str | None = None,
         dtype: str = "float32"):
    """Loads a jaxvoc checkpoint folder: returns the model's ``Pretrained`` object (config + params).

    ``ckpt_dir`` may instead be a Hugging Face Hub repo id, ``owner/name`` or ``owner/name@revision`` (when no
    such local path exists): the official files are fetched (only those the model needs), converted once and
    kept in jaxvoc's cache ($JAXVOC_CACHE, default ~/.cache/jaxvoc) by repo and commit; ``revision``: a branch,
    tag or commit; ``kind``: the model kind when the repo's files do not tell (jaxvoc/io/hub.py).
    ``dtype``: the vocoders (BigVGAN, WaveGlow) also synthesize in ``"bfloat16"`` (docs/bigvgan.md)."""
    import os

    from jaxvoc.errors import UserError
    from jaxvoc.io.checkpoint import read_meta
    from jaxvoc.registry import model_module

    if revision is not None or kind is not None or not os.path.exists(ckpt_dir):
        from jaxvoc.io import hub

        if hub.is_repo_id(ckpt_dir):
            ckpt_dir = hub.converted(ckpt_dir, revision, kind).path
        elif revision is not None or kind is not None:
            raise UserError(f"revision= and kind= are for Hugging Face repo ids; {ckpt_dir} is a local path")
    meta = read_meta(ckpt_dir)
    cls = model_module(meta["kind"]).Pretrained
    dtypes = getattr(cls, "dtypes", ("float32",))
    if dtype not in dtypes:
        raise UserError(f"dtype {dtype!r} is not available for a {meta['kind']} model; use one of {', '.join(dtypes)}")
    options = {} if dtype == "float32" else {"dtype": dtype}
    return cls.from_checkpoint(ckpt_dir, meta, fold=fold, **options)
