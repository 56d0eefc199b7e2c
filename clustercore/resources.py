"""Resources: an exact, integer amount of CPUs, memory and named extended resources."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import attrs

from clustercore.values import RESOURCE_RE, Reader


def _counts(value: Mapping[str, int] | Iterable[tuple[str, int]] | None) -> tuple[tuple[str, int], ...]:
    items = dict(value or ())
    return tuple(sorted((k, v) for k, v in items.items() if v != 0))


@attrs.frozen
class Resources:
    """An amount of resources: ``cpu`` in whole CPUs (vCPUs or hardware threads),
    ``memory`` in MiB, ``extended`` named counts such as ``pci/10de:1eb8`` or
    ``hugepages-1G``. Integers only, so sums and comparisons are exact.

    >>> need = Resources(cpu=2, memory=2048, extended={"pci/10de:1eb8": 1})
    >>> have = Resources(cpu=8, memory=16384)
    >>> need.fits(have), need.shortfall(have)
    (False, ('pci/10de:1eb8',))
    >>> (have - Resources(cpu=2, memory=1024)).memory
    15360
    """

    cpu: int = 0
    memory: int = 0
    extended: tuple[tuple[str, int], ...] = attrs.field(default=(), converter=_counts)

    def get(self, name: str) -> int:
        if name == "cpu":
            return self.cpu
        if name == "memory":
            return self.memory
        for key, value in self.extended:
            if key == name:
                return value
        return 0

    def names(self) -> tuple[str, ...]:
        return ("cpu", "memory", *(k for k, _ in self.extended))

    def __add__(self, other: Resources) -> Resources:
        ext = dict(self.extended)
        for k, v in other.extended:
            ext[k] = ext.get(k, 0) + v
        return Resources(self.cpu + other.cpu, self.memory + other.memory, ext)

    def __sub__(self, other: Resources) -> Resources:
        ext = dict(self.extended)
        for k, v in other.extended:
            ext[k] = ext.get(k, 0) - v
        return Resources(self.cpu - other.cpu, self.memory - other.memory, ext)

    def __mul__(self, count: int) -> Resources:
        return Resources(self.cpu * count, self.memory * count, {k: v * count for k, v in self.extended})

    def shortfall(self, available: Resources) -> tuple[str, ...]:
        """Names of the resources of which ``available`` has less than this asks for."""
        short = [n for n in ("cpu", "memory") if self.get(n) > available.get(n)]
        short += [k for k, v in self.extended if v > available.get(k)]
        return tuple(short)

    def fits(self, available: Resources) -> bool:
        return not self.shortfall(available)

    def negative(self) -> tuple[str, ...]:
        return tuple(n for n in self.names() if self.get(n) < 0)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"cpu": self.cpu, "memory": self.memory}
        if self.extended:
            out["extended"] = dict(self.extended)
        return out

    @classmethod
    def from_dict(cls, data: object, path: str = "resources") -> Resources:
        r = Reader("resources", data, path)
        cpu = r.integer("cpu", 0, minimum=0)
        memory = r.integer("memory", 0, minimum=0)
        ext_raw = r.get("extended") or {}
        if not isinstance(ext_raw, Mapping):
            raise r.fail("extended", "must be a mapping of resource name to count", ext_raw)
        ext_reader = Reader("resources", ext_raw, r.field("extended"))
        ext = {}
        for name in ext_raw:
            if not isinstance(name, str) or not RESOURCE_RE.match(name):
                raise ext_reader.fail(str(name), f"resource names must match {RESOURCE_RE.pattern}", name)
            ext[name] = ext_reader.integer(name, minimum=0)
        r.done()
        return cls(cpu, memory, ext)


ZERO = Resources()
