"""Paths a VM spec names, kept under the cluster's storage roots.

Every path a spec may name (file and block disk sources, the cloud-init seed, vhost-user
sockets, a direct kernel boot's kernel and initrd, the console log) must lie below one of
the cluster's ``storage_roots`` (:attr:`clustercore.config.ClusterConfig.storage_roots`):
absolute, without ``.`` or ``..`` parts, and below a root also once symbolic links are
resolved (``os.path.realpath`` of what exists, the root's too). Checked when a workload is
submitted (``clustercore_validate_workload``) and again by the driver before it writes or
defines anything (:func:`flavors.virt.cloudinit.write_seed` writes only below a root, creating
directories only there).

Block devices are paths like any other: a cluster whose VMs use ``/dev/mapper/...`` says
so with that root.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from clustercore.errors import ValidationError
from flavors.virt.spec import VMSpec


def spec_paths(spec: VMSpec) -> list[tuple[str, str]]:
    """``(field, path)`` of every host path ``spec`` names."""
    out = [(f"disks[{i}].source", d.source) for i, d in enumerate(spec.disks) if d.kind in ("file", "block")]
    out += [(f"nics[{i}].source", str(n.source)) for i, n in enumerate(spec.nics) if n.kind == "vhostuser"]
    if spec.cloud_init is not None:
        out.append(("cloud_init.seed", spec.cloud_init.seed))
    if spec.boot is not None:
        out.append(("boot.kernel", spec.boot.kernel))
        if spec.boot.initrd is not None:
            out.append(("boot.initrd", spec.boot.initrd))
    if spec.console_log is not None:
        out.append(("console_log", spec.console_log))
    return out


def root_of(path: str, roots: Iterable[str]) -> str | None:
    """The storage root ``path`` lies below (None when it lies below none, or is not a
    plain absolute path)."""
    if not isinstance(path, str) or not path.startswith("/") or "\x00" in path:
        return None
    if any(part in (".", "..") for part in path.split("/")):
        return None
    real = os.path.realpath(path)
    for root in sorted(roots):
        base = os.path.normpath(root)
        if _below(os.path.normpath(path), base) and _below(real, os.path.realpath(base)):
            return base
    return None


def path_problem(path: str, roots: Iterable[str]) -> str | None:
    """Why ``path`` may not be used (None when it lies below a root)."""
    roots = sorted(roots)
    if not isinstance(path, str) or not path.startswith("/"):
        return "must be an absolute path"
    if any(part in (".", "..") for part in path.split("/")):
        return "must not hold . or .. parts"
    if root_of(path, roots) is None:
        shown = ", ".join(roots) or "none declared"
        return f"must lie below a storage root of the cluster ({shown}), symbolic links resolved"
    return None


def check_paths(spec: VMSpec, roots: Iterable[str], prefix: str = "spec") -> None:
    """Raise :class:`ValidationError` naming the field of the first path outside every root."""
    roots = tuple(roots)
    for field, path in spec_paths(spec):
        problem = path_problem(path, roots)
        if problem is not None:
            raise ValidationError("vm", f"{prefix}.{field}" if prefix else field, problem, path)


def _below(path: str, root: str) -> bool:
    return path.startswith(root.rstrip("/") + "/")
