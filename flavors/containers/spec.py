"""What a container is: :class:`ContainerSpec`, a frozen attrs value object.

A container workload (flavor ``container``) carries its spec as a plain dict in
``Workload.spec``, read with the same conventions as the VM spec (:mod:`clustercore.fields`:
unknown fields refused, each error naming its dotted field)::

    name: web
    image: localhost/clustercore-busybox:1   # loaded from one archive on every host
    command: [/bin/sh, -c, "while true; do date; sleep 1; done"]
    env: [MODE=demo]
    cpus: 0.5        # a CFS quota; the scheduler counts whole CPUs (rounded up)
    memory: 64       # MiB, a cgroup limit and the scheduler's request
    pids: 64
    network: host    # or none
    stop_timeout: 10 # s between SIGTERM and SIGKILL
    move: checkpoint # moved by CRIU checkpoint/restore (memory kept); or restart: stopped, started anew
    mounts:          # cluster volumes of format dir, bind-mounted (the cluster fills in source)
      - {volume: web-data, target: /data, read_only: false}

Units: memory in MiB, times in seconds.
"""

from __future__ import annotations

import math
import re
from typing import Any

import attrs

from clustercore.errors import ValidationError
from clustercore.fields import attrs_to_dict, bounded, checked, choices, pattern, read_attrs
from clustercore.resources import Resources

KIND = "container"

NAME_RE = re.compile(r"\A[a-z0-9][a-z0-9_.-]{0,62}\Z")  # podman's container names, kept short
IMAGE_RE = re.compile(r"\A[a-z0-9][a-z0-9._/:@-]{0,254}\Z")
ENV_RE = re.compile(r"\A[A-Za-z_][A-Za-z0-9_]{0,127}=[^\x00]{0,4096}\Z")
VOLUME_RE = re.compile(r"\A[a-z0-9][a-z0-9_.-]{0,62}\Z")
PATH_RE = re.compile(r"\A(/[^\x00-\x1f\x7f/]+)+\Z")  # absolute, no empty parts
SOURCE_RE = re.compile(r"\A(/[^\x00-\x1f\x7f/]+)+\Z|\A\Z")
MAX_ARGS, MAX_ENV, MAX_MOUNTS = 256, 256, 64


def _arg_problem(value: str) -> str | None:
    return "must not contain NUL" if "\x00" in value else ("is longer than 4096" if len(value) > 4096 else None)


@attrs.frozen
class Mount:
    """A cluster volume (format ``dir``) bind-mounted at ``target``; ``source`` is the
    volume's directory on the hosts, filled in by the cluster (the flavor's
    ``clustercore_complete_workload``) and checked against it."""

    volume: str = attrs.field(metadata=pattern(VOLUME_RE))
    target: str = attrs.field(metadata=pattern(PATH_RE))
    read_only: bool = False
    source: str = attrs.field(default="", metadata=pattern(SOURCE_RE))


@attrs.frozen
class ContainerSpec:
    name: str = attrs.field(metadata=pattern(NAME_RE))
    image: str = attrs.field(metadata=pattern(IMAGE_RE))
    memory: int = attrs.field(metadata=bounded(4, 1 << 20))
    command: tuple[str, ...] = attrs.field(default=(), metadata=checked(_arg_problem))
    env: tuple[str, ...] = attrs.field(default=(), metadata=pattern(ENV_RE))
    cpus: float | None = attrs.field(default=None, metadata=bounded(0.01, 1024))
    pids: int | None = attrs.field(default=None, metadata=bounded(8, 4_194_304))
    network: str = attrs.field(default="host", metadata=choices("host", "none"))
    stop_timeout: int = attrs.field(default=10, metadata=bounded(0, 3600))
    move: str = attrs.field(default="checkpoint", metadata=choices("checkpoint", "restart"))
    mounts: tuple[Mount, ...] = ()

    def requests(self) -> Resources:
        """What the scheduler counts: whole CPUs (the quota rounded up; none without one)
        and memory (MiB), in the same accounting as VMs on a shared host."""
        return Resources(math.ceil(self.cpus) if self.cpus else 0, self.memory)

    def environment(self) -> dict[str, str]:
        return dict(item.split("=", 1) for item in self.env)

    def check(self) -> ContainerSpec:
        """Every field's bounds and patterns (as :meth:`from_dict` checks them) and the
        rules across fields."""
        read_attrs(ContainerSpec, self.to_dict(), "", KIND)
        return self._check_rules()

    def _check_rules(self) -> ContainerSpec:
        for field, limit, values in (("command", MAX_ARGS, self.command), ("env", MAX_ENV, self.env)):
            if len(values) > limit:
                raise ValidationError(KIND, field, f"at most {limit} entries", len(values))
        names = [item.split("=", 1)[0] for item in self.env]
        for i, name in enumerate(names):
            if name in names[:i]:
                raise ValidationError(KIND, f"env[{i}]", "set twice", name)
        if len(self.mounts) > MAX_MOUNTS:
            raise ValidationError(KIND, "mounts", f"at most {MAX_MOUNTS} entries", len(self.mounts))
        for i, mount in enumerate(self.mounts):
            if any(part in (".", "..") for part in mount.target.split("/")):
                raise ValidationError(KIND, f"mounts[{i}].target", "no . or .. parts", mount.target)
            if mount.target in [m.target for m in self.mounts[:i]]:
                raise ValidationError(KIND, f"mounts[{i}].target", "mounted twice", mount.target)
        return self

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = attrs_to_dict(self)
        return out

    @classmethod
    def from_dict(cls, data: object, path: str = "") -> ContainerSpec:
        return read_attrs(cls, data, path, KIND)._check_rules()
