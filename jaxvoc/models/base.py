"""What every converted model shares (small pure helpers, big_vision style): reading it from a jaxvoc
checkpoint, folding its weight norm in one compiled program, and jitting its entry points with a counter of
compilations (tests and commands report how many programs a run compiled)."""

from __future__ import annotations

from typing import Any, Callable

import jax

from jaxvoc.nn.conv import fold_weight_norm


def from_checkpoint(cls, config_cls, ckpt_dir: str, meta: dict, fold: bool = True, **options):
    """``cls(config, params, fold, **options)`` of a jaxvoc checkpoint folder whose metadata ``meta`` was read."""
    from jaxvoc.io.checkpoint import load_tree

    return cls(config_cls.from_dict(meta["config"], f"{ckpt_dir}/jaxvoc.json"), load_tree(ckpt_dir), fold, **options)


def cast_floating(tree: Any, dtype) -> Any:
    """Every floating-point leaf of ``tree`` as ``dtype`` (integer leaves unchanged), in one compiled program."""
    import jax.numpy as jnp

    def cast(x):
        return x.astype(dtype) if jnp.issubdtype(jnp.result_type(x), jnp.floating) else x

    return jax.jit(lambda t: jax.tree_util.tree_map(cast, t))(tree)


def folded(params: Any) -> Any:
    """Weight norm folded, as one compiled program (eagerly, every distinct shape would compile its own ops)."""
    return jax.jit(fold_weight_norm)(params)


def counting_jit(fn: Callable, on_trace: Callable[[], None], static_argnums=()) -> Callable:
    """``jax.jit(fn)`` that calls ``on_trace()`` each time it traces (once per new shape / static option)."""

    def traced(*args):
        on_trace()
        return fn(*args)

    return jax.jit(traced, static_argnums=static_argnums)


def _libc():
    import ctypes
    import ctypes.util

    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None


def release_memory() -> None:
    """Hands freed heap memory back to the operating system (glibc's malloc_trim; nothing elsewhere). XLA's
    compiler frees ~0.7 GB of scratch after compiling the full-size BigVGAN, which glibc would otherwise keep,
    and which the program's own buffers would then add to: trimming between compiling and running keeps the
    peak resident memory at the compiler's (docs/bigvgan.md)."""
    libc = _libc()
    if libc is not None and hasattr(libc, "malloc_trim"):
        libc.malloc_trim(0)


MMAP_THRESHOLD = 128 * 1024  # bytes: glibc's own initial value, kept fixed


def map_large_blocks() -> None:
    """Every allocation of MMAP_THRESHOLD bytes or more gets its own mapping, returned to the system the moment
    it is freed (glibc's mallopt M_MMAP_THRESHOLD; nothing elsewhere). By default glibc raises that threshold
    (up to 32 MB) each time such a block is freed, after which blocks of up to 32 MB (the weights read from a
    checkpoint, XLA's buffers) are carved from its heaps, whose freed pages it keeps: with the full-size BigVGAN
    this held 0.2-0.3 GB more at the peak of ``jaxvoc synth`` (docs/bigvgan.md, "Where the memory goes")."""
    libc = _libc()
    if libc is not None and hasattr(libc, "mallopt"):
        libc.mallopt(-3, MMAP_THRESHOLD)  # M_MMAP_THRESHOLD
