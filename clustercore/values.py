"""Immutable values and the reader of user input that every value object is built with.

:class:`FrozenMap` (with :func:`freeze` and :func:`thaw`) makes JSON-like data immutable and
hashable, and :func:`dumps` writes JSON-ready data as the store keeps it; :class:`Reader`
reads one dict of user input and names the dotted field of anything wrong; ``NAME_RE``,
``LABEL_RE`` and ``RESOURCE_RE`` are the patterns names must match.
"""

from __future__ import annotations

import enum
import json
import math
import re
from collections.abc import Callable, ItemsView, Iterable, Iterator, Mapping
from typing import Any, TypeVar, overload

import orjson

from clustercore.errors import ValidationError

K = TypeVar("K")
V = TypeVar("V")
T = TypeVar("T")

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,252}\Z")
LABEL_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,252}\Z")
#: Control characters (newline included): refused in every identifier, label and option.
CONTROL = re.compile(r"[\x00-\x1f\x7f]")
RESOURCE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/:-]{0,126}\Z")


class FrozenMap(Mapping[K, V]):
    """An immutable, hashable mapping (values must be hashable: use :func:`freeze`)."""

    __slots__ = ("_data", "_hash")

    def __init__(self, data: Mapping[K, V] | Iterable[tuple[K, V]] = ()) -> None:
        self._data: dict[K, V] = dict(data)
        self._hash: int | None = None

    def __getitem__(self, key: K) -> V:
        return self._data[key]

    def __iter__(self) -> Iterator[K]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    # The dict's own (C) methods rather than Mapping's Python mixins: the scheduler calls
    # these per decision.
    def __contains__(self, key: object) -> bool:
        return key in self._data

    @overload
    def get(self, key: K, /) -> V | None: ...
    @overload
    def get(self, key: K, default: V | T, /) -> V | T: ...
    def get(self, key: K, default: object = None, /) -> object:
        return self._data.get(key, default)

    def items(self) -> ItemsView[K, V]:
        return self._data.items()

    def __hash__(self) -> int:
        if self._hash is None:
            self._hash = hash(frozenset(self._data.items()))
        return self._hash

    def __eq__(self, other: object) -> bool:
        if isinstance(other, FrozenMap):
            return self._data == other._data
        if isinstance(other, Mapping):
            return self._data == dict(other)
        return NotImplemented

    def __repr__(self) -> str:
        return f"FrozenMap({self._data!r})"

    def thaw(self) -> dict[K, Any]:
        """A plain, mutable, JSON-ready copy (nested values thawed too)."""
        return {k: thaw(v) if isinstance(v, _NESTED) else v for k, v in self._data.items()}


EMPTY: FrozenMap[Any, Any] = FrozenMap()
_NESTED = (FrozenMap, tuple, list, set, frozenset)  # what thaw() changes; anything else is kept


def freeze(value: Any) -> Any:
    """JSON-like data made immutable: dicts become FrozenMap, lists become tuples."""
    if isinstance(value, FrozenMap):
        return value
    if isinstance(value, Mapping):
        return FrozenMap((k, freeze(v)) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return tuple(freeze(v) for v in value)
    if isinstance(value, (set, frozenset)):
        return frozenset(freeze(v) for v in value)
    return value


def thaw(value: Any) -> Any:
    """The inverse of :func:`freeze`, giving JSON-ready data."""
    if isinstance(value, FrozenMap):
        return value.thaw()
    if isinstance(value, (tuple, list)):
        return [thaw(v) for v in value]
    if isinstance(value, (set, frozenset)):
        return sorted(thaw(v) for v in value)
    return value


def dumps(data: Any, sort_keys: bool = True) -> bytes:
    """``data`` (JSON-ready: dicts, lists, strings, numbers, booleans, None) as compact JSON
    bytes, keys sorted unless ``sort_keys`` is False: by orjson (a tenth of the json
    module's time), by json for what orjson refuses (integers beyond 64 bits, keys that are
    not strings). Either reads back equal with any JSON parser; text other than ASCII is
    written as UTF-8, not escaped."""
    try:
        return orjson.dumps(data, option=orjson.OPT_SORT_KEYS if sort_keys else None)
    except TypeError:
        return json.dumps(data, separators=(",", ":"), sort_keys=sort_keys).encode()


def ratio_map(value: Mapping[str, float] | None) -> FrozenMap[str, float]:
    """Converter for per-resource ratio maps."""
    return FrozenMap({str(k): float(v) for k, v in (value or {}).items()})


def frozen_map(value: Mapping[Any, Any] | None) -> FrozenMap[Any, Any]:
    """Converter for mappings inside value objects: frozen, with :data:`EMPTY` for none."""
    frozen: FrozenMap[Any, Any] = EMPTY if not value else freeze(value)
    return frozen


#: Bounds of every integer and number read from input (see :meth:`Reader.integer`).
MAX_INTEGER = 2**48
MAX_NUMBER = 1e15


class Reader:
    """Reads one dict of user input, naming the dotted field of anything wrong.

    Used by every ``from_dict``; flavors may use it for their own specs.
    """

    def __init__(self, kind: str, data: object, path: str = "") -> None:
        self.kind = kind
        self.path = path
        if not isinstance(data, Mapping):
            raise ValidationError(kind, path or "<root>", "must be a mapping", data)
        self.data: Mapping[str, Any] = data
        self.seen: set[str] = set()

    def field(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else name

    def fail(self, name: str, problem: str, value: object = None) -> ValidationError:
        return ValidationError(self.kind, self.field(name), problem, value)

    def get(self, name: str, default: Any = None) -> Any:
        self.seen.add(name)
        return self.data.get(name, default)

    def has(self, name: str) -> bool:
        return name in self.data

    def string(self, name: str, default: str | None = None, pattern: re.Pattern[str] | None = None) -> str:
        value = self.get(name, default)
        if value is None:
            raise self.fail(name, "is required")
        if not isinstance(value, str):
            raise self.fail(name, "must be a string", value)
        if pattern is not None and not pattern.match(value):
            raise self.fail(name, f"must match {pattern.pattern}", value)
        return value

    def choice(self, name: str, choices: tuple[str, ...], default: str | None = None) -> str:
        """A string that is one of ``choices``."""
        value = self.string(name, default)
        if value not in choices:
            raise self.fail(name, f"must be one of {', '.join(choices)}", value)
        return value

    def integer(self, name: str, default: int | None = None, minimum: int | None = None,
                maximum: int = MAX_INTEGER) -> int:
        """An integer in [minimum, maximum]: every integer read is bounded (by default to
        2**48, so sums over many hosts still fit numpy's int64)."""
        value = self.get(name, default)
        if value is None:
            raise self.fail(name, "is required")
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(name, "must be an integer", value)
        if minimum is not None and value < minimum:
            raise self.fail(name, f"must be >= {minimum}", value)
        if value > maximum:
            raise self.fail(name, f"must be <= {maximum}", value if value.bit_length() < 64 else "a huge integer")
        return value

    def number(self, name: str, default: float | None = None, minimum: float | None = None,
               maximum: float = MAX_NUMBER) -> float:
        """A finite number in [minimum, maximum] (by default at most 1e15)."""
        value = self.get(name, default)
        if value is None:
            raise self.fail(name, "is required")
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) > maximum:
            raise self.fail(name, f"must be <= {maximum:g}", value if value.bit_length() < 64 else "a huge integer")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise self.fail(name, "must be a finite number", value)
        if minimum is not None and value < minimum:
            raise self.fail(name, f"must be >= {minimum}", value)
        if value > maximum:
            raise self.fail(name, f"must be <= {maximum:g}", value)
        return float(value)

    def boolean(self, name: str, default: bool = False) -> bool:
        value = self.get(name, default)
        if not isinstance(value, bool):
            raise self.fail(name, "must be true or false", value)
        return value

    def optional_number(self, name: str) -> float | None:
        return None if self.get(name) is None else self.number(name)

    def str_map(self, name: str) -> FrozenMap[str, str]:
        value = self.get(name) or {}
        if not isinstance(value, Mapping):
            raise self.fail(name, "must be a mapping of strings", value)
        for k, v in value.items():
            if not isinstance(k, str) or not isinstance(v, str):
                raise self.fail(f"{name}.{k}", "keys and values must be strings", v)
            if CONTROL.search(k) or CONTROL.search(v):
                raise self.fail(f"{name}.{k}", "must not hold control characters", v)
        return frozen_map(value)

    def str_set(self, name: str) -> frozenset[str]:
        value = self.get(name) or ()
        if isinstance(value, str) or not isinstance(value, (list, tuple, set, frozenset)):
            raise self.fail(name, "must be a list of strings", value)
        for i, item in enumerate(value):
            if not isinstance(item, str) or not item:
                raise self.fail(f"{name}[{i}]", "must be a non-empty string", item)
            if CONTROL.search(item):
                raise self.fail(f"{name}[{i}]", "must not hold control characters", item)
        return frozenset(value)

    def mapping(self, name: str) -> FrozenMap[str, Any]:
        value = self.get(name) or {}
        if not isinstance(value, Mapping):
            raise self.fail(name, "must be a mapping", value)
        return frozen_map(value)

    def enum(self, name: str, kind: type[enum.Enum], default: enum.Enum | None = None) -> Any:
        value = self.get(name, default.value if default is not None else None)
        if value is None:
            raise self.fail(name, "is required")
        try:
            return kind(value)
        except ValueError:
            choices = ", ".join(str(m.value) for m in kind)
            raise self.fail(name, f"must be one of {choices}", value) from None

    def inner(self, parse: Callable[[object, str], T], value: object, path: str) -> T:
        """Parse a nested definition; its errors are reported as errors of this one."""
        try:
            return parse(value, path)
        except ValidationError as exc:
            raise ValidationError(self.kind, exc.field, exc.problem, exc.value) from None

    def nested(self, name: str, parse: Callable[[object, str], T], default: T) -> T:
        value = self.get(name)
        return default if value is None else self.inner(parse, value, self.field(name))

    def items(self, name: str, parse: Callable[[object, str], T]) -> tuple[T, ...]:
        value = self.get(name) or ()
        if not isinstance(value, (list, tuple)):
            raise self.fail(name, "must be a list", value)
        return tuple(self.inner(parse, item, f"{self.field(name)}[{i}]") for i, item in enumerate(value))

    def done(self) -> None:
        """Reject fields nobody read: a typo must not pass silently."""
        unknown = sorted(set(self.data) - self.seen)
        if unknown:
            raise self.fail(unknown[0], "unknown field", self.data[unknown[0]])

