"""Field metadata for a flavor's spec (``choices``, ``pattern``, ``bounded``, ``checked``)
and the generic (de)serialisation it drives: :func:`read_attrs` builds a frozen attrs spec
(or one of its parts) from a dict, field by field, checking each value against its type
hint and metadata, and naming the dotted field of anything wrong. The VM spec
(:mod:`flavors.virt.spec`) and the container spec (:mod:`flavors.containers.spec`) are both
read this way."""

from __future__ import annotations

import re
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import attrs

from clustercore.values import Reader

T = TypeVar("T")


def choices(*values: str) -> dict[str, Any]:
    """Field metadata: the value must be one of ``values``."""
    return {"choices": values}


def pattern(regex: re.Pattern[str]) -> dict[str, Any]:
    """Field metadata: the value must match ``regex``."""
    return {"pattern": regex}


def minimum(value: int) -> dict[str, Any]:
    """Field metadata: the value must be at least ``value``."""
    return {"minimum": value}


def bounded(low: float, high: float) -> dict[str, Any]:
    """Field metadata: the value must lie in ``low..high`` (every number of a spec has a bound)."""
    return {"minimum": low, "maximum": high}


def checked(check: Callable[[str], str | None], regex: re.Pattern[str] | None = None) -> dict[str, Any]:
    """Field metadata: ``check(value)`` returns what is wrong with a string, or None
    (after ``regex`` when given)."""
    meta: dict[str, Any] = {"check": check}
    if regex is not None:
        meta["pattern"] = regex
    return meta


def attrs_to_dict(obj: Any) -> Any:
    """An attrs object as plain, JSON-ready data (tuples become lists)."""
    if attrs.has(type(obj)):
        return {f.name: attrs_to_dict(getattr(obj, f.name)) for f in attrs.fields(type(obj))}
    if isinstance(obj, tuple):
        return [attrs_to_dict(v) for v in obj]
    return obj


def read_attrs(cls: type[T], data: object, path: str, kind: str) -> T:
    """Build ``cls`` (an attrs class of a spec) from a dict, field by field, with
    :class:`Reader`'s errors (``kind``, dotted field, what was wrong, the value)."""
    r = Reader(kind, data, path)
    hints = _hints(cls)
    values: dict[str, Any] = {}
    for f in attrs.fields(cls):  # type: ignore[arg-type]
        if not r.has(f.name):
            if f.default is attrs.NOTHING:
                raise r.fail(f.name, "is required")
            r.seen.add(f.name)
            continue
        values[f.name] = _value(r, f.name, hints[f.name], f.metadata, r.get(f.name))
    r.done()
    return cls(**values)


_HINTS: dict[object, dict[str, Any]] = {}


def _hints(cls: object) -> dict[str, Any]:
    """The type hints of ``cls`` (resolved once: they are strings under ``annotations``)."""
    hints = _HINTS.get(cls)
    if hints is None:
        hints = _HINTS[cls] = typing.get_type_hints(cls)
    return hints


def _value(r: Reader, name: str, hint: Any, meta: Mapping[str, Any], value: Any) -> Any:
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        if value is None:
            return None
        inner = next(a for a in args if a is not type(None))
        return _value(r, name, inner, meta, value)
    if typing.get_origin(hint) is tuple:
        if not isinstance(value, (list, tuple)):
            raise r.fail(name, "must be a list", value)
        return tuple(_value(r, f"{name}[{i}]", args[0], meta, v) for i, v in enumerate(value))
    if attrs.has(hint):
        return r.inner(lambda v, p: read_attrs(hint, v, p, r.kind), value, r.field(name))
    if hint is bool:
        if not isinstance(value, bool):
            raise r.fail(name, "must be true or false", value)
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise r.fail(name, "must be an integer", value)
        if "minimum" in meta and value < meta["minimum"]:
            raise r.fail(name, f"must be >= {meta['minimum']}", value)
        if "maximum" in meta and value > meta["maximum"]:
            raise r.fail(name, f"must be <= {meta['maximum']}", value)
        if "choices" in meta and str(value) not in meta["choices"]:
            raise r.fail(name, f"must be one of {', '.join(meta['choices'])}", value)
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
            raise r.fail(name, "must be a number", value)
        if "minimum" in meta and value < meta["minimum"]:
            raise r.fail(name, f"must be >= {meta['minimum']}", value)
        if "maximum" in meta and value > meta["maximum"]:
            raise r.fail(name, f"must be <= {meta['maximum']}", value)
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise r.fail(name, "must be a string", value)
        if "choices" in meta and value not in meta["choices"]:
            raise r.fail(name, f"must be one of {', '.join(meta['choices'])}", value)
        if "pattern" in meta and not meta["pattern"].match(value):
            raise r.fail(name, f"must match {meta['pattern'].pattern}", value[:200])
        problem = meta["check"](value) if "check" in meta else None
        if problem is not None:
            raise r.fail(name, problem, value[:200])
        return value
    raise TypeError(f"no reader for {hint!r}")  # a programming error in the spec
