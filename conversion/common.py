"""The conversion framework shared by every model: safe torch loading, state-dict key normalisation, the
mechanical torch-name -> Flax-path rename, layout transposes, and the check against the parameter tree the
JAX model expects (missing / unexpected / wrongly shaped tensors listed by name).

torch is imported lazily: ``jaxvoc`` itself never imports it; only this package (conversion) does.
"""

from __future__ import annotations

import os
import re
from typing import Any, Callable, Iterable, Mapping, NamedTuple

import jax
import numpy as np

from jaxvoc.errors import UserError


class Converted(NamedTuple):
    """What every converter's ``convert(src, config=None)`` returns: the config dict written to the jaxvoc
    checkpoint, the (weight-normed) parameter tree, and further named trees saved beside it (discriminators,
    optimizer moments; empty when the source has none)."""

    config: dict
    params: Any
    extra: dict


def load_torch_file(path: str) -> Any:
    """``torch.load(path, map_location='cpu', weights_only=True)`` with one-line errors. A file that needs the
    full unpickler (a pickled model object) is refused here; see conversion.safe_pickle for those."""
    import pickle

    import torch

    if not os.path.exists(path):
        raise UserError(f"checkpoint not found: {path}")
    if os.path.isdir(path):
        raise UserError(f"{path} is a folder; give the .pt file")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else "unpickling failed"
        if "Weights only load failed" in str(e) or "Unsupported global" in str(e):
            raise UserError(f"{path} holds pickled objects that a weights-only load refuses ({_global_name(e)}); "
                            "it is not a plain state dict") from None
        raise UserError(f"{path} is not a readable torch file ({first})") from None
    except (RuntimeError, EOFError, ValueError, OSError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"{path} is truncated or not a torch file ({first[:160]}); download it again") from None


def _global_name(e: Exception) -> str:
    m = re.search(r"GLOBAL ([\w.]+)", str(e))
    return f"global {m.group(1)}" if m else "non-tensor objects"


def to_numpy_state_dict(sd: Mapping[str, Any], source: str) -> dict[str, np.ndarray]:
    """Tensors to float32/int numpy arrays; anything that is not a tensor is an error naming its key."""
    import torch

    out = {}
    for k, v in sd.items():
        if not isinstance(v, torch.Tensor):
            raise UserError(f"{source}: entry {k!r} is a {type(v).__name__}, not a tensor; give a state dict")
        a = v.detach().cpu()
        if a.is_floating_point():
            a = a.float()
        out[k] = a.numpy()
    return out


_PARAMETRIZATION = re.compile(r"\.parametrizations\.weight\.original([01])$")


def normalize_keys(sd: Mapping[str, Any]) -> dict[str, Any]:
    """Both weight-norm styles to ``weight_g`` / ``weight_v``, and DataParallel's ``module.`` prefix dropped."""
    out = {}
    strip = all(k.startswith("module.") for k in sd) and len(sd) > 0
    for k, v in sd.items():
        if strip:
            k = k[len("module."):]
        k = _PARAMETRIZATION.sub(lambda m: ".weight_g" if m.group(1) == "0" else ".weight_v", k)
        out[k] = v
    return out


def weight_norm_style(keys: Iterable[str]) -> str | None:
    """The weight-norm key style of a state dict: 'parametrizations' (``parametrizations.weight.original0/1``,
    torch.nn.utils.parametrizations.weight_norm), 'weight_g' (``weight_g`` / ``weight_v``, the older
    torch.nn.utils.weight_norm), or None when it has no weight-normed layer."""
    keys = list(keys)
    if any(_PARAMETRIZATION.search(k) for k in keys):
        return "parametrizations"
    if any(k.endswith(".weight_g") for k in keys):
        return "weight_g"
    return None


# config key under which a converted checkpoint records the source's weight-norm style (when it is not the
# official code's own), so that `jaxvoc export` writes the keys the way the source had them
WEIGHT_NORM_KEY = "jaxvoc_weight_norm"


def with_weight_norm_style(sd: Mapping[str, Any], style: str | None) -> dict[str, Any]:
    """``weight_g`` / ``weight_v`` keys renamed to ``style`` ('parametrizations' or 'weight_g'/None: kept)."""
    if style != "parametrizations":
        return dict(sd)
    out = {}
    for k, v in sd.items():
        k = re.sub(r"\.weight_g$", ".parametrizations.weight.original0", k)
        out[re.sub(r"\.weight_v$", ".parametrizations.weight.original1", k)] = v
    return out


def torch_key_to_path(key: str) -> tuple[str, ...]:
    """'resblocks.3.convs1.0.weight_v' -> ('resblocks_3', 'convs1_0', 'weight_v'); a numeric index joins the
    name before it. The leaf 'weight' becomes Flax's 'kernel'; with no name before an index the index stays."""
    parts: list[str] = []
    for tok in key.split("."):
        if tok.isdigit() and parts:
            parts[-1] = f"{parts[-1]}_{tok}"
        else:
            parts.append(tok)
    if parts[-1] == "weight":
        parts[-1] = "kernel"
    return tuple(parts)


def path_to_torch_key(path: tuple[str, ...]) -> str:
    """The inverse of torch_key_to_path, for messages: ('resblocks_2', 'convs1_1', 'kernel') ->
    'resblocks.2.convs1.1.weight'."""
    parts = [re.sub(r"_(\d+)", r".\1", p) for p in path]
    if parts[-1] == "kernel":
        parts[-1] = "weight"
    return ".".join(parts)


def to_jax_layout(value: np.ndarray, transposed_conv: bool = False) -> np.ndarray:
    """torch layouts -> jaxvoc layouts: Linear [out, in] -> [in, out]; Conv1d [out, in, K] -> [K, in, out];
    ConvTranspose1d [in, out, K] -> [K, in, out]; Conv2d [out, in, kh, kw] -> [kh, kw, in, out]. The same
    permutation maps weight_g (size 1 on the normed axes) to the gain shape the JAX layers use."""
    if value.ndim == 2:
        return value.T
    if value.ndim == 3:
        return value.transpose(2, 0, 1) if transposed_conv else value.transpose(2, 1, 0)
    if value.ndim == 4:
        return value.transpose(2, 3, 1, 0)
    return value


def from_jax_layout(value: np.ndarray, transposed_conv: bool = False) -> np.ndarray:
    """The inverse of :func:`to_jax_layout` (jaxvoc layouts -> torch layouts), contiguous."""
    if value.ndim == 2:
        value = value.T
    elif value.ndim == 3:
        value = value.transpose(1, 2, 0) if transposed_conv else value.transpose(2, 1, 0)
    elif value.ndim == 4:
        value = value.transpose(3, 2, 0, 1)
    return np.array(value, order="C")  # a copy: contiguous, 0-d kept


def params_to_state_dict(params: Mapping[str, Any], *, transposed: Callable[[tuple[str, ...]], bool] = lambda p: False
                         ) -> dict[str, np.ndarray]:
    """The inverse of :func:`state_dict_to_params`: a jaxvoc parameter tree -> {torch key: numpy array in
    torch layout} (weight norm as ``weight_g`` / ``weight_v``; see :func:`with_weight_norm_style`)."""
    out = {}
    for path, value in flatten(params).items():
        out[path_to_torch_key(path)] = from_jax_layout(np.asarray(value), transposed(path))
    return out


def flatten(tree: Mapping[str, Any], prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], Any]:
    out = {}
    for k, v in tree.items():
        if isinstance(v, Mapping):
            out.update(flatten(v, prefix + (k,)))
        else:
            out[prefix + (k,)] = v
    return out


def unflatten(flat: Mapping[tuple[str, ...], Any]) -> dict:
    tree: dict = {}
    for path, v in flat.items():
        node = tree
        for p in path[:-1]:
            node = node.setdefault(p, {})
        node[path[-1]] = v
    return tree


def expected_shapes(init_fn: Callable[[], Any]) -> dict[tuple[str, ...], tuple[int, ...]]:
    """Shapes of the parameter tree a model's ``init`` would create, without computing anything."""
    tree = jax.eval_shape(init_fn)
    return {k: tuple(v.shape) for k, v in flatten(tree).items()}


def state_dict_to_params(sd: Mapping[str, np.ndarray], expected: Mapping[tuple[str, ...], tuple[int, ...]],
                         source: str, *, transposed: Callable[[tuple[str, ...]], bool] = lambda p: False,
                         rename: Callable[[str], str] = lambda k: k) -> dict:
    """Maps a normalised numpy state dict onto the expected Flax tree. A weight-normed layer may also come
    folded (a plain ``weight``), which the JAX layers accept as ``kernel``. Fails listing every missing,
    unexpected and wrongly shaped tensor by its torch name."""
    flat: dict[tuple[str, ...], np.ndarray] = {}
    origin: dict[tuple[str, ...], str] = {}
    unexpected, wrong = [], []
    exp = dict(expected)
    # folded alternatives: 'kernel' wherever the model expects a weight_v
    for path, shape in list(exp.items()):
        if path[-1] == "weight_v":
            exp.setdefault(path[:-1] + ("kernel",), shape)
    for key, value in sd.items():
        path = torch_key_to_path(rename(key))
        if path not in exp:
            unexpected.append(key)
            continue
        arr = to_jax_layout(np.asarray(value), transposed(path))
        if tuple(arr.shape) != exp[path]:
            wrong.append(f"{key} {tuple(value.shape)} (expected {_torch_shape(exp[path], value.ndim, transposed(path))})")
            continue
        flat[path] = arr
        origin[path] = key
    missing = []
    for path in expected:
        if path in flat:
            continue
        if path[-1] in ("weight_v", "weight_g") and path[:-1] + ("kernel",) in flat:
            continue
        missing.append(path_to_torch_key(path))
    # a layer given both folded and unfolded weights keeps the unfolded pair
    for path in list(flat):
        if path[-1] == "kernel" and path[:-1] + ("weight_v",) in flat:
            unexpected.append(origin[path])
            del flat[path]
    problems = []
    if missing:
        problems.append(f"missing {len(missing)}: {_few(missing)}")
    if unexpected:
        problems.append(f"unexpected {len(unexpected)}: {_few(unexpected)}")
    if wrong:
        problems.append(f"wrong shape {len(wrong)}: {_few(wrong)}")
    if problems:
        raise UserError(f"{source} does not fit the model config: " + "; ".join(problems) +
                        " — check that the config belongs to these weights")
    return unflatten(flat)


def _torch_shape(jax_shape: tuple[int, ...], ndim: int, transposed_conv: bool) -> tuple[int, ...]:
    """Inverse of to_jax_layout's permutation, for messages in torch's terms."""
    return tuple(from_jax_layout(np.empty(jax_shape, dtype=np.uint8), transposed_conv).shape)


def _few(items: Iterable[str], n: int = 8) -> str:
    items = list(items)
    s = ", ".join(items[:n])
    return s + (f", … (+{len(items) - n} more)" if len(items) > n else "")


def to_torch(obj: Any) -> Any:
    """numpy arrays (in dicts, lists, tuples) -> torch tensors, for a torch.save that any torch reads with
    ``weights_only=True``."""
    import torch

    if isinstance(obj, np.ndarray) or isinstance(obj, np.generic):
        return torch.from_numpy(np.array(obj, order="C"))
    if isinstance(obj, dict):
        return {k: to_torch(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_torch(v) for v in obj)
    return obj


def official_config(config: Mapping[str, Any]) -> dict:
    """A jaxvoc checkpoint's config without jaxvoc's own keys (``jaxvoc_*``): what the official code reads."""
    return {k: v for k, v in config.items() if not str(k).startswith("jaxvoc_")}


def load_strict(module: Any, sd: Mapping[str, Any], what: str, source: str) -> None:
    """``module.load_state_dict(sd, strict=True)`` (the official module checks the exported tensors: names,
    shapes); a mismatch is one line naming the tensors."""
    try:
        module.load_state_dict(to_torch(dict(sd)), strict=True)
    except RuntimeError as e:
        msg = " ".join(str(e).split())
        raise UserError(f"{source}: the {what} does not fit the official model of its config ({msg[:300]}); "
                        "the checkpoint and its config do not belong together") from None


def count_params(tree: Any) -> int:
    return int(sum(np.size(x) for x in jax.tree_util.tree_leaves(tree)))
