"""Config dataclasses from plain mappings: type coercion, validation, and the way back to plain data.

Every config of clift (the run config's sections, each method's config, the suite's run configs) is a
dataclass whose fields carry a type, a default and ``metadata["help"]``. :func:`build_dataclass` turns a
mapping read from YAML or the command line into one, collecting every problem (unknown keys with the
closest match, wrong types, ``__post_init__`` checks through :class:`Validated`) instead of stopping at the
first; :func:`to_dict` is the inverse. This module imports nothing else of clift but its errors, so both
:mod:`clift.config` and :mod:`clift.methods` can build on it without importing each other.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

from clift.errors import ConfigError
from clift.safety import shorten

__all__ = ["Validated", "build_dataclass", "check", "field_help", "to_dict"]


def _is_dataclass_type(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_type_name(a) for a in typing.get_args(tp))
    if origin in (list, tuple, Sequence):
        args = typing.get_args(tp)
        return f"list of {_type_name(args[0])}" if args else "list"
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", str(tp))


def _coerce_union(value: Any, tp: Any, where: str, problems: list[str]) -> Any:
    args = typing.get_args(tp)
    if value is None and type(None) in args:
        return None
    for arg in args:
        if arg is type(None):
            continue
        trial: list[str] = []
        out = _coerce(value, arg, where, trial)
        if not trial:
            return out
    problems.append(f"{where}: got {shorten(value)}, expected {_type_name(tp)}.")
    return value


def _coerce_literal(value: Any, tp: Any, where: str, problems: list[str]) -> Any:
    allowed = typing.get_args(tp)
    if value in allowed:
        return value
    # YAML reads `no` as False and numbers as ints; accept their string forms for string literals
    for a in allowed:
        if isinstance(a, str) and str(value).lower() == a.lower():
            return a
        if value is False and a == "no":
            return a
    problems.append(f"{where}: got {shorten(value)}; allowed values: {', '.join(repr(a) for a in allowed)}.")
    return value


def _coerce_list(value: Any, tp: Any, where: str, problems: list[str]) -> Any:
    (inner, *_rest) = typing.get_args(tp) or (Any,)
    if isinstance(value, str):  # `tasks=a,b` on the command line
        value = [v.strip() for v in value.split(",") if v.strip()]
    if not isinstance(value, (list, tuple)):
        problems.append(f"{where}: got {shorten(value)}, expected a list.")
        return value
    items = [_coerce(v, inner, f"{where}[{i}]", problems) for i, v in enumerate(value)]
    return tuple(items) if typing.get_origin(tp) is tuple else items


def _coerce_dict(value: Any, tp: Any, where: str, problems: list[str]) -> Any:
    if not isinstance(value, Mapping):
        problems.append(f"{where}: got {shorten(value)}, expected a mapping.")
        return value
    return dict(value)


def _to_bool(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
        return value.lower() in ("true", "yes", "1")
    return None


def _to_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            try:
                f = float(value)
            except ValueError:
                return None
            return int(f) if f.is_integer() else None
    return None


def _to_float(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):  # YAML 1.1 reads "1e-3" as a string
        try:
            return float(value)
        except ValueError:
            return None
    return None


def _to_str(value: Any) -> str | None:
    return str(value) if isinstance(value, (str, int, float)) and not isinstance(value, bool) else None


#: scalar type → (converter returning None when the value does not convert, what a message expects)
_SCALARS: dict[type, tuple[Callable[[Any], Any], str]] = {
    bool: (_to_bool, "true or false"),
    int: (_to_int, "an integer"),
    float: (_to_float, "a number"),
    str: (_to_str, "a string"),
}


def _coerce(value: Any, tp: Any, where: str, problems: list[str]) -> Any:
    """Convert ``value`` to type ``tp`` or record a problem (and return the value unchanged)."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        return _coerce_union(value, tp, where, problems)
    if origin is Literal:
        return _coerce_literal(value, tp, where, problems)
    if origin in (list, tuple, Sequence):
        return _coerce_list(value, tp, where, problems)
    if origin is dict or tp is dict:
        return _coerce_dict(value, tp, where, problems)
    if tp in _SCALARS:
        convert, expected = _SCALARS[tp]
        out = convert(value)
        if out is None:
            problems.append(f"{where}: got {shorten(value)}, expected {expected}.")
            return value
        return out
    if _is_dataclass_type(tp):
        return build_dataclass(tp, value, where, problems)
    return value


def field_help(cls: type) -> dict[str, str]:
    """``{field: help text}`` from each field's ``metadata["help"]``."""
    return {f.name: f.metadata.get("help", "") for f in dataclasses.fields(cls)}


def build_dataclass(cls: type, data: Any, where: str, problems: list[str]) -> Any:
    """Instantiate dataclass ``cls`` from a mapping, recording every problem in ``problems``.

    Unknown keys are reported with the list of allowed keys (the fields, then ``cls._EXTRA_KEYS``).
    ``__post_init__`` validation errors (:class:`ConfigError`) are collected too, prefixed with ``where``.

    Args:
        cls: the dataclass.
        data: a mapping of field values (or an instance of ``cls``, returned as is; ``None`` = defaults).
        where: the dotted position of ``data`` in the whole config, for messages ("" at the top).
        problems: where problems are appended.

    Returns:
        The instance, or ``None`` when there was a problem.
    """
    if isinstance(data, cls):
        return data
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        problems.append(f"{where or 'config'}: got {shorten(data)}, expected a mapping of keys to values.")
        return None
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    for key in (k for k in data if k not in fields):
        close = difflib.get_close_matches(str(key), list(fields), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        full = f"{where}.{key}" if where else str(key)
        allowed = list(fields) + list(getattr(cls, "_EXTRA_KEYS", ()))
        problems.append(
            f"unknown key {full!r}.{hint} Allowed keys in {where or 'the top level'}: {', '.join(allowed)}."
        )
    kwargs = {}
    n_before = len(problems)
    for name, value in data.items():
        if name in fields:
            sub = f"{where}.{name}" if where else name
            kwargs[name] = _coerce(value, hints[name], sub, problems)
    if len(problems) > n_before:
        return None
    try:
        return cls(**kwargs)
    except ConfigError as err:
        problems.extend(p if not where or p.startswith(where) else f"{where}: {p}" for p in err.problems)
        return None


def to_dict(obj: Any) -> Any:
    """A plain, YAML/JSON-ready copy of a config dataclass (tuples become lists).

    A dataclass with a ``method_name()`` (a method config) gets its registered name as ``name`` first.
    """
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        out = {}
        if hasattr(obj, "method_name"):
            out["name"] = obj.method_name()
        for f in dataclasses.fields(obj):
            if f.init:
                out[f.name] = to_dict(getattr(obj, f.name))
        return out
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def check(problems: list[str], cond: bool, message: str) -> None:
    """Append ``message`` to ``problems`` unless ``cond`` holds (for :meth:`Validated.problems`)."""
    if not cond:
        problems.append(message)


class Validated:
    """Mixin: ``__post_init__`` calls ``problems()`` and raises one :class:`ConfigError` with all of them."""

    def problems(self) -> list[str]:
        return []

    def __post_init__(self) -> None:
        found = self.problems()
        if found:
            raise ConfigError(found)
