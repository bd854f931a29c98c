"""Reading the JSON files jaxvoc takes (configs, checkpoint metadata) and the dataclass configs in them, with
one-line errors."""

from __future__ import annotations

import dataclasses
import functools
import types
import typing

from jaxvoc.errors import UserError


def read_json(path: str, what: str, fix: str):
    """The parsed JSON file at ``path``; a missing file, a folder or text that is not JSON is one UserError
    naming ``what`` the file should be and ending in ``fix``."""
    import json

    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        raise UserError(f"{what} not found: {path}; {fix}") from None
    except IsADirectoryError:
        raise UserError(f"{path} is a folder, not a {what} file; {fix}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{path} is not valid JSON ({e}); {fix}") from None


# ----------------------------------------------------------------------------------------------------------
# Dataclass configs


def _short(v) -> str:
    r = repr(v)
    return r if len(r) <= 80 else r[:77] + "..."


class _Bad(Exception):
    """A value that does not fit its type (caught per key and reported with the key's whole value)."""


def _optional(tp):
    """``X`` for ``X | None`` (or ``Optional[X]``), else None."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(tp)) == 2:
            return args[0]
        raise TypeError(f"unsupported config type {tp}")
    return None


def describe(tp, plural: bool = False) -> str:
    """Words for a config type: 'an integer', 'a list of integers', 'one of 'a', 'b''..."""
    inner = _optional(tp)
    if inner is not None:
        return describe(inner, plural) + (" or nulls" if plural else " or null")
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Literal:
        return ("values " if plural else "") + "one of " + ", ".join(repr(a) for a in args)
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            what = f"list{'s' if plural else ''} of {describe(args[0], True)}"
        else:
            what = f"list{'s' if plural else ''} of {len(args)} {describe(args[0], True)}"
        return what if plural else "a " + what
    if dataclasses.is_dataclass(tp) or tp is dict:
        return "objects" if plural else "an object"
    words = {int: ("an integer", "integers"), float: ("a number", "numbers"), bool: ("true or false", "booleans"),
             str: ("a string", "strings")}
    if tp in words:
        return words[tp][plural]
    return "anything"


_SCALARS = {bool: (bool,), int: (int, float), float: (int, float), str: (str,), dict: (dict,)}


def _convert(tp, v, key: str, source: str, meta: dict):
    inner = _optional(tp)
    if inner is not None:
        return None if v is None else _convert(inner, v, key, source, meta)
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        return load_dataclass(tp, v, source, prefix=f"{key}.")
    if origin is typing.Literal:
        if meta.get("lower") and isinstance(v, str):
            v = v.lower()
        if v not in args or type(v) is not type(args[args.index(v)]):
            raise _Bad
        return v
    if origin is tuple:
        if not isinstance(v, (list, tuple)):
            raise _Bad
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(args[0], x, key, source, meta) for x in v)
        if len(v) != len(args):
            raise _Bad
        return tuple(_convert(a, x, key, source, meta) for a, x in zip(args, v))
    if tp is not typing.Any:
        if tp not in _SCALARS:
            raise TypeError(f"unsupported config type {tp}")
        if not isinstance(v, _SCALARS[tp]) or tp is not bool and isinstance(v, bool) or \
                tp is int and isinstance(v, float) and not v.is_integer():
            raise _Bad
        # an integer is a number too, kept as read in a float field so that a round trip writes it back
        v = int(v) if tp is int else v.lower() if tp is str and meta.get("lower") else v
    lo, hi = meta.get("min"), meta.get("max")
    if isinstance(v, (int, float)) and (lo is not None and v < lo or hi is not None and v > hi):
        raise _Bad
    return v


def _range(meta) -> str:
    lo, hi = meta.get("min"), meta.get("max")
    return "" if lo is None and hi is None else f" >= {lo}" if hi is None else f" <= {hi}" if lo is None else \
        f" in [{lo}, {hi}]"


def refuse_unknown(d: dict, known, source: str, *, prefix: str = "", what: str = "key", hint: str = "") -> None:
    """``{source}: unknown key(s) ['foo']; known: ...`` when ``d`` has keys outside ``known``."""
    unknown = [k for k in d if k not in known]
    if unknown:
        raise UserError(f"{source}: unknown {what}(s) {[prefix + str(k) for k in unknown]}; "
                        + (hint or f"known: {', '.join(sorted(known))}"))


@functools.lru_cache(maxsize=None)
def _hints(cls) -> dict:
    return typing.get_type_hints(cls)


def load_dataclass(cls, d, source: str, *, keep_unknown: bool = False, ignore=(), prefix: str = "",
                   what: str = "key", hint: str = ""):
    """``cls(**d)`` for a dataclass config, read by its field names and checked against its type hints.

    * Types: ``int`` (an integral float is taken), ``float`` (an integer is kept as read), ``bool``, ``str``,
      ``X | None``, ``tuple[X, ...]`` and fixed ``tuple[X, Y]`` (from JSON lists), ``Literal[...]``, ``dict``,
      ``Any`` and nested dataclasses (read from an object, their keys named ``outer.inner``). A value of the
      wrong type is one UserError: ``{source}: {key} must be {expected}, got {value!r}``.
    * Field metadata: ``min`` / ``max`` (a number, or every number of a list), ``lower`` (lower-case a
      string before checking it), ``extra`` (the field receives the unknown keys as ``((key, value), ...)``).
    * A key missing without a default is ``{source} lacks {what}(s) [...]``; a null value means the default
      (as in the official configs) unless the type allows None. Fields with ``init=False`` are not read.
    * Keys that are no field: refused by name, unless in ``ignore`` or ``keep_unknown`` (they then go to the
      ``extra`` field, if the class has one, in their order, with the ignored ones). With ``keep_unknown``
      and an ``ignore`` list (the known keys that are not fields), a kept key close to a field's name
      (a typo, ``upsample_rate``) is still refused.
    * ``cls.validate(source)``, if defined, runs last, for rules across fields.
    ``prefix`` is put before key names in messages, ``what`` names the keys (``"train setting"``) and
    ``hint`` replaces the list of known keys after an unknown one (or is appended to the missing message).
    """
    if not isinstance(d, dict):
        raise UserError(f"{source}: {prefix[:-1] or 'the config'} must be an object (a mapping of settings), "
                        f"got {_short(d)}")
    hints = _hints(cls)
    fields = [f for f in dataclasses.fields(cls) if f.init]
    extra_field = next((f.name for f in fields if f.metadata.get("extra")), None)
    names = {f.name for f in fields if f.name != extra_field}
    if not keep_unknown:
        refuse_unknown({k: v for k, v in d.items() if k not in ignore}, names, source, prefix=prefix, what=what,
                       hint=hint)
    elif ignore:  # the other keys are kept, but one that looks like a field's name is taken for a typo
        import difflib

        typos = {k: m[0] for k in d if k not in names and k not in ignore and isinstance(k, str)
                 for m in [difflib.get_close_matches(k, names, 1, 0.85)] if m}
        if typos:
            raise UserError(f"{source}: unknown {what}(s) {[prefix + k for k in typos]}; did you mean "
                            f"{', '.join(repr(prefix + m) for m in typos.values())}?")
    kw, missing = {}, []
    for f in fields:
        if f.name == extra_field:
            continue
        tp = hints[f.name]
        has_default = f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
        v = d.get(f.name)
        if f.name not in d or v is None and _optional(tp) is None:
            if not has_default:
                missing.append(prefix + f.name)
            continue
        try:
            kw[f.name] = _convert(tp, v, prefix + f.name, source, f.metadata)
        except _Bad:
            raise UserError(f"{source}: {prefix}{f.name} must be {describe(tp)}{_range(f.metadata)}, "
                            f"got {_short(v)}") from None
    if missing:
        raise UserError(f"{source} lacks {what}(s) {missing}" + (f"; {hint}" if hint else ""))
    if extra_field:
        kw[extra_field] = tuple((k, v) for k, v in d.items() if k not in names)
    obj = cls(**kw)
    if hasattr(obj, "validate"):
        obj.validate(source)
    return obj
