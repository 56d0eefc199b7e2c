"""Reading an IAllocator request safely: its text decoded with limits, the whole document
checked once, and typed readers that bound every number a handler uses.

Limits (a request beyond one is refused with :class:`RequestError` naming the field):

* the request file: at most :data:`MAX_REQUEST_BYTES`, nesting at most :data:`MAX_DEPTH`;
* strings (keys and values): at most :data:`MAX_STRING` characters, no control characters
  (C0, DEL, C1);
* numbers: JSON numbers only (``NaN``/``Infinity`` refused), integers of at most
  :data:`MAX_INT_DIGITS` digits, floats finite;
* memory (MiB) in ``[0, MAX_MEMORY]``, disk (MiB) in ``[0, MAX_DISK]``, CPUs in
  ``[0, MAX_CPUS]`` (an instance's vCPUs from 1), counts (spindles, NICs, ipolicy values
  other than sizes) in ``[0, MAX_COUNT]``, ratios in ``(0, MAX_RATIO]``;
* booleans are JSON booleans, tags and node lists are lists of strings.

Where hail differs (checked against Debian's ganeti-htools-3.0): hail exits 1 without an
answer on undecodable input (``NaN``, ``Infinity``, deep nesting) and on wrongly typed
fields (``offline: "yes"``, ``tags: "str"``); we answer ``success: false`` and exit 0, as for
every other refusal (Ganeti treats both as a failed allocation). hail refuses a negative or
huge request size only by finding no node for it; we refuse it as invalid. hail accepts
negative or huge node and instance values, floats for integers and control characters in
strings; we refuse them: Ganeti never sends them, and a score built on them is meaningless.
"""

from __future__ import annotations

import json
import math
import re
import reprlib
from collections.abc import Mapping
from typing import Any

MAX_REQUEST_BYTES = 64 * 2**20
MAX_DEPTH = 32
MAX_STRING = 1024
MAX_INT_DIGITS = 20
MAX_MEMORY = 2**32  # MiB: 4 PiB
MAX_DISK = 2**40  # MiB: 1 EiB
MAX_CPUS = 2**16
MAX_COUNT = 2**16
MAX_RATIO = 1024.0

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_show = reprlib.Repr()
_show.maxstring = _show.maxother = 40
_show.maxlevel = 2


class RequestError(ValueError):
    """The request is malformed; the message says where."""


def show(value: Any) -> str:
    """A short repr for messages (bounded however large or deep ``value`` is)."""
    return _show.repr(value)


def _refuse_constant(name: str) -> Any:
    raise RequestError(f"{name} is not a JSON number")


def _bounded_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise RequestError(f"integer {text[:20]}... has more than {MAX_INT_DIGITS} digits")
    return int(text)


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise RequestError(f"number {text[:40]} is out of range")
    return value


def decode(text: str | bytes) -> Any:
    """The JSON document in ``text``, checked by :func:`check_document`; RequestError if
    it is not valid JSON within the limits."""
    if len(text) > MAX_REQUEST_BYTES:
        raise RequestError(f"the request is larger than {MAX_REQUEST_BYTES} bytes")
    try:
        data = json.loads(text, parse_constant=_refuse_constant, parse_int=_bounded_int,
                          parse_float=_finite_float)
    except RecursionError:
        raise RequestError(f"the request is nested deeper than {MAX_DEPTH} levels") from None
    except RequestError:
        raise
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError
        raise RequestError(f"not valid JSON: {exc}") from None
    check_document(data)
    return data


def check_document(data: Any) -> None:
    """Every value of ``data`` is a JSON value within the limits above (iteratively: no
    recursion however deep); RequestError naming the first place that is not."""
    stack: list[tuple[Any, str, int]] = [(data, "request file", 0)]
    while stack:
        value, where, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise RequestError(f"{where}: nested deeper than {MAX_DEPTH} levels")
        if isinstance(value, str):
            _check_string(value, where)
        elif isinstance(value, bool) or value is None:
            continue
        elif isinstance(value, int):
            if abs(value) >= 10**MAX_INT_DIGITS:
                raise RequestError(f"{where}: integer with more than {MAX_INT_DIGITS} digits")
        elif isinstance(value, float):
            if not math.isfinite(value):
                raise RequestError(f"{where}: {value} is not a JSON number")
        elif isinstance(value, dict):
            for key, child in value.items():
                if not isinstance(key, str):
                    raise RequestError(f"{where}: key {show(key)} is not a string")
                _check_string(key, f"{where} key")
                stack.append((child, f"{where}.{key}", depth + 1))
        elif isinstance(value, list):
            stack.extend((child, f"{where}[{i}]", depth + 1) for i, child in enumerate(value))
        else:
            raise RequestError(f"{where}: {type(value).__name__} is not a JSON value")


def _check_string(value: str, where: str) -> None:
    if len(value) > MAX_STRING:
        raise RequestError(f"{where}: string longer than {MAX_STRING} characters")
    if _CONTROL.search(value):
        raise RequestError(f"{where}: control character in {show(value)}")


# --------------------------------------------------------------------------- typed readers


def need(data: Mapping[str, Any], key: str, kind: type | tuple[type, ...], where: str) -> Any:
    """``data[key]``, checked to be a ``kind``; RequestError naming ``where`` otherwise."""
    if not isinstance(data, Mapping) or key not in data:
        raise RequestError(f"{where}: missing {key!r}")
    value = data[key]
    if not isinstance(value, kind) or (isinstance(value, bool) and kind in (int, (int, float))):
        raise RequestError(f"{where}.{key}: expected {getattr(kind, '__name__', kind)}, got {show(value)}")
    return value


def _get(data: Mapping[str, Any], key: str, default: Any, where: str) -> Any:
    """``data[key]``, ``default`` when missing or null; required when ``default`` is ...."""
    if not isinstance(data, Mapping):
        raise RequestError(f"{where}: expected dict, got {show(data)}")
    value = data.get(key)
    if value is None:
        if default is ...:
            raise RequestError(f"{where}: missing {key!r}")
        return default
    return value


def number(data: Mapping[str, Any], key: str, where: str, high: int, low: int = 0, default: Any = ...) -> int:
    """An integer in ``[low, high]``: memory, disk, CPUs, counts."""
    value = _get(data, key, default, where)
    if value is default:
        return int(value)
    if not isinstance(value, int) or isinstance(value, bool):
        raise RequestError(f"{where}.{key}: expected int, got {show(value)}")
    if not low <= value <= high:
        raise RequestError(f"{where}.{key}: {show(value)} is outside [{low}, {high}]")
    return value


def ratio(data: Mapping[str, Any], key: str, where: str, default: float) -> float:
    """A finite number in ``(0, MAX_RATIO]`` (vcpu-ratio, spindle-ratio)."""
    value = _get(data, key, default, where)
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise RequestError(f"{where}.{key}: expected a number, got {show(value)}")
    if not (math.isfinite(value) and 0 < value <= MAX_RATIO):
        raise RequestError(f"{where}.{key}: {show(value)} is outside (0, {MAX_RATIO}]")
    return float(value)


def flag(data: Mapping[str, Any], key: str, where: str, default: bool) -> bool:
    """A JSON boolean (``"yes"`` or ``1`` are refused, as hail does)."""
    value = _get(data, key, default, where)
    if not isinstance(value, bool):
        raise RequestError(f"{where}.{key}: expected a boolean, got {show(value)}")
    return value


def strings(data: Mapping[str, Any], key: str, where: str, default: Any = ()) -> tuple[str, ...]:
    """A list of strings (tags, node names); a bare string is refused, as hail does."""
    value = _get(data, key, default, where)
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise RequestError(f"{where}.{key}: expected a list of strings, got {show(value)}")
    return tuple(value)


def mapping(data: Mapping[str, Any], key: str, where: str, default: Any = ...) -> Mapping[str, Any]:
    """A JSON object."""
    value = _get(data, key, default, where)
    if not isinstance(value, Mapping):
        raise RequestError(f"{where}.{key}: expected dict, got {show(value)}")
    return value
