"""A restricted unpickler for torch files that pickle whole model objects (e.g. the published WaveGlow
checkpoints, ``{"model": <glow.WaveGlow>, ...}``).

``torch.load(weights_only=False)`` on such a file imports the pickled classes' modules and may call anything
the pickle names (``os.system`` through ``__reduce__``). :func:`load` instead builds plain data only:

* tensors, through torch's own rebuild functions (``torch._utils._rebuild_tensor_v2`` & co., the ones a
  weights-only load allows), with storages read by ``torch.load``'s container code (zip and legacy formats);
* dicts, lists, tuples, ``OrderedDict``, ``set``, numbers and strings;
* objects of classes from an allow-list of modules (``torch.nn.*`` and the model's own module names) as
  inert :class:`Record` stand-ins holding the class name and the pickled state (a module's ``__dict__``:
  ``_parameters``, ``_buffers``, ``_modules`` and attributes). The class is never imported and none of
  its code runs; a record can only be created the way pickle recreates plain objects (``__new__`` then
  state); a pickle that *calls* a class is refused.

Any other global (a function, a class of another module) makes the whole load fail with
:class:`RefusedPickle` before it is called: nothing named by the pickle runs.
"""

from __future__ import annotations

import collections
import fnmatch
import io
import os
import pickle
import types
import warnings
from typing import Any, Iterable

from jaxvoc.errors import UserError

# classes recreated as inert records by default (torch's own module classes, weight-norm hooks)
DEFAULT_RECORD_MODULES = ("torch.nn.modules.*", "torch.nn.utils.*", "torch.nn.parameter")


class RefusedPickle(pickle.UnpicklingError):
    """The pickle names something that is not plain data or an allowed class."""


class _RecordMeta(type):
    def __call__(cls, *args, **kwargs):  # REDUCE: the pickle calls the class
        raise RefusedPickle(f"calls {cls.qualified_name}(...) instead of restoring an object's state")


class Record(metaclass=_RecordMeta):
    """An inert stand-in for an object of a pickled class: ``qualified_name`` ('glow.WaveGlow'), ``state``
    (what pickle passed to ``__setstate__``; for torch modules their ``__dict__``) and ``args`` (``__new__``
    arguments, normally empty)."""

    qualified_name = "?"
    dump_patches = False  # read by torch's legacy loader when it checks saved class sources

    def __new__(cls, *args, **kwargs):
        obj = object.__new__(cls)
        obj.args = args + tuple(sorted(kwargs.items()))
        obj.state = None
        return obj

    def __setstate__(self, state):
        self.state = state

    def __reduce__(self):
        raise TypeError("jaxvoc records are not picklable")

    # --- torch.nn.Module views --------------------------------------------------------------------------
    @property
    def module(self) -> str:
        return self.qualified_name.rsplit(".", 1)[0]

    @property
    def name(self) -> str:
        return self.qualified_name.rsplit(".", 1)[1]

    @property
    def attrs(self) -> dict:
        """The object's attributes (its ``__dict__``), or {} when the state is not a dict."""
        st = self.state
        if isinstance(st, tuple) and len(st) == 2 and isinstance(st[0], dict):
            st = st[0]
        return st if isinstance(st, dict) else {}

    def children(self) -> dict[str, "Record"]:
        """Sub-modules of a torch module record (``_modules``), in order."""
        mods = self.attrs.get("_modules") or {}
        return {k: v for k, v in mods.items() if isinstance(v, Record)}

    def __repr__(self) -> str:
        return f"<record {self.qualified_name}>"


def module_state_dict(rec: Record, prefix: str = "") -> dict[str, Any]:
    """What ``Module.state_dict()`` would return for a torch module record: parameters and persistent
    buffers of it and its sub-modules, keyed by dotted path."""
    out: dict[str, Any] = {}
    attrs = rec.attrs
    non_persistent = attrs.get("_non_persistent_buffers_set") or set()
    for k, v in (attrs.get("_parameters") or {}).items():
        if v is not None:
            out[prefix + k] = v
    for k, v in (attrs.get("_buffers") or {}).items():
        if v is not None and k not in non_persistent:
            out[prefix + k] = v
    for k, child in rec.children().items():
        out.update(module_state_dict(child, prefix + k + "."))
    return out


def module_classes(rec: Record, prefix: str = "") -> dict[str, str]:
    """Dotted path -> qualified class name, for a module record and all its sub-modules ('' is the root)."""
    out = {prefix.rstrip("."): rec.qualified_name}
    for k, child in rec.children().items():
        out.update(module_classes(child, prefix + k + "."))
    return out


def _torch_rebuilders() -> dict[tuple[str, str], Any]:
    import torch._utils as tu

    names = ["_rebuild_tensor", "_rebuild_tensor_v2", "_rebuild_parameter", "_rebuild_parameter_with_state"]
    return {("torch._utils", n): getattr(tu, n) for n in names if hasattr(tu, n)}


def _thnn_backend():  # torch < 1.0 pickled modules with `_backend = thnn backend` via this call
    rec = object.__new__(_record_type("torch.nn.backends.thnn", "THNNFunctionBackend"))
    rec.args, rec.state = (), None
    return rec


def _reconstructor(cls, base, state):  # copyreg._reconstructor, protocol 0/1 objects
    if not (isinstance(cls, type) and issubclass(cls, Record)) or base is not object or state is not None:
        raise RefusedPickle("uses copyreg._reconstructor on something other than a plain object")
    return Record.__new__(cls)


_SAFE_GLOBALS: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("__builtin__", "set"): set,
    ("__builtin__", "frozenset"): frozenset,
    ("torch.nn.backends.thnn", "_get_thnn_function_backend"): _thnn_backend,
    ("copyreg", "_reconstructor"): _reconstructor,
    ("copy_reg", "_reconstructor"): _reconstructor,
}

_RECORD_TYPES: dict[str, type] = {}


def _record_type(module: str, name: str) -> type:
    key = f"{module}.{name}"
    if key not in _RECORD_TYPES:
        _RECORD_TYPES[key] = _RecordMeta(name, (Record,), {"qualified_name": key, "__module__": __name__})
    return _RECORD_TYPES[key]


def _safe_dtype_globals() -> dict[tuple[str, str], Any]:
    import torch

    out = {}
    for n in ("float32", "float64", "float16", "bfloat16", "int64", "int32", "int16", "int8", "uint8", "bool"):
        out[("torch", n)] = getattr(torch, n)
    out[("torch", "Size")] = torch.Size
    return out


def make_unpickler(record_modules: Iterable[str]) -> types.SimpleNamespace:
    """A ``pickle_module`` for ``torch.load``: Unpickler and load() that only build plain data and records
    of classes whose module matches one of ``record_modules`` (fnmatch patterns)."""
    patterns = tuple(record_modules)
    allowed = {**_SAFE_GLOBALS, **_torch_rebuilders(), **_safe_dtype_globals()}

    class RestrictedUnpickler(pickle.Unpickler):
        def find_class(self, module: str, name: str):
            if (module, name) in allowed:
                return allowed[(module, name)]
            if "." not in name and any(fnmatch.fnmatchcase(module, p) for p in patterns) and name[:1].isupper():
                return _record_type(module, name)
            raise RefusedPickle(f"references {module}.{name}, which is neither plain data nor an allowed "
                                f"model class")

    def load(file, **kwargs):
        return RestrictedUnpickler(file, **kwargs).load()

    def loads(data, **kwargs):
        return load(io.BytesIO(data), **kwargs)

    return types.SimpleNamespace(__name__="jaxvoc_safe_pickle", Unpickler=RestrictedUnpickler, load=load,
                                 loads=loads, UnpicklingError=pickle.UnpicklingError)


def load(path: str, record_modules: Iterable[str] = ()) -> Any:
    """Reads a torch file (zip or legacy format) with the restricted unpickler; model objects of the allowed
    modules (plus torch.nn's) come back as :class:`Record`. Raises UserError (one line) for a missing,
    truncated or refused file; a refused file has had nothing it names executed."""
    import torch

    if not os.path.exists(path):
        raise UserError(f"checkpoint not found: {path}")
    if os.path.isdir(path):
        raise UserError(f"{path} is a folder; give the .pt file")
    module = make_unpickler(tuple(record_modules) + DEFAULT_RECORD_MODULES)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's legacy loader warns that record classes have no source
            return torch.load(path, map_location="cpu", pickle_module=module, weights_only=False)
    except RefusedPickle as e:
        raise UserError(f"refused to load {path}: its pickle {e}; loading it with torch.load could run "
                        "arbitrary code (nothing was executed)") from None
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else "unpickling failed"
        raise UserError(f"{path} is not a readable torch file ({first[:160]})") from None
    except (RuntimeError, EOFError, ValueError, OSError, KeyError, AttributeError, TypeError, IndexError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"{path} is truncated or not a torch file ({first[:160]}); download it again") from None
