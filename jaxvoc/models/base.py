"""What every converted model shares (small pure helpers, big_vision style): reading it from a jaxvoc
checkpoint, folding its weight norm in one compiled program, and jitting its entry points with a counter of
compilations (tests and commands report how many programs a run compiled)."""

from __future__ import annotations

from typing import Any, Callable

import jax

from jaxvoc.nn.conv import fold_weight_norm


def from_checkpoint(cls, config_cls, ckpt_dir: str, meta: dict, fold: bool = True):
    """``cls(config, params, fold)`` of a jaxvoc checkpoint folder whose metadata ``meta`` was read."""
    from jaxvoc.io.checkpoint import load_tree

    return cls(config_cls.from_dict(meta["config"], f"{ckpt_dir}/jaxvoc.json"), load_tree(ckpt_dir), fold)


def folded(params: Any) -> Any:
    """Weight norm folded, as one compiled program (eagerly, every distinct shape would compile its own ops)."""
    return jax.jit(fold_weight_norm)(params)


def counting_jit(fn: Callable, on_trace: Callable[[], None], static_argnums=()) -> Callable:
    """``jax.jit(fn)`` that calls ``on_trace()`` each time it traces (once per new shape / static option)."""

    def traced(*args):
        on_trace()
        return fn(*args)

    return jax.jit(traced, static_argnums=static_argnums)
