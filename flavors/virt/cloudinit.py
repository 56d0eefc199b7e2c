"""cloud-init NoCloud seeds: an ISO 9660 image labelled ``cidata`` holding ``user-data``,
``meta-data`` and optionally ``network-config`` (what cloud-init looks for on a CD-ROM).
Built in Python (pycdlib), no external tool."""

from __future__ import annotations

import io
import os
from collections.abc import Iterable
from pathlib import Path

import pycdlib

from clustercore.config import DEFAULT_STORAGE_ROOTS
from clustercore.errors import ValidationError
from flavors.virt.paths import path_problem, root_of
from flavors.virt.spec import CloudInit

LABEL = "cidata"


def seed_image(ci: CloudInit) -> bytes:
    iso = pycdlib.PyCdlib()
    iso.new(interchange_level=3, joliet=3, rock_ridge="1.09", vol_ident=LABEL)
    files = {"user-data": ci.user_data, "meta-data": ci.meta_data}
    if ci.network_config is not None:
        files["network-config"] = ci.network_config
    for i, (name, text) in enumerate(files.items()):
        data = text.encode()
        iso.add_fp(io.BytesIO(data), len(data), f"/FILE{i};1", rr_name=name, joliet_path=f"/{name}")
    out = io.BytesIO()
    iso.write_fp(out)
    iso.close()
    return out.getvalue()


def write_seed(ci: CloudInit, roots: Iterable[str] = DEFAULT_STORAGE_ROOTS) -> Path:
    """Write the seed image at ``ci.seed``, which must lie below one of ``roots`` (an
    existing directory; :mod:`flavors.virt.paths`): ValidationError (field
    ``cloud_init.seed``) otherwise. Directories are created only below that root, and the
    file is never written through a symbolic link."""
    roots = tuple(roots)

    def refuse(problem: str) -> ValidationError:
        return ValidationError("vm", "cloud_init.seed", problem, ci.seed)

    problem = path_problem(ci.seed, roots)
    root = root_of(ci.seed, roots)
    if problem is not None or root is None:
        raise refuse(problem or "must lie below a storage root")
    if not os.path.isdir(root):
        raise refuse(f"storage root {root} does not exist (it is not created for a seed)")
    path = Path(ci.seed)
    for parent in reversed(path.parents):  # root first: every directory made lies below it
        if len(str(parent)) <= len(root):
            continue
        if root_of(str(parent) + "/x", roots) != root:
            raise refuse(f"{parent} leads outside the storage root {root}")
        try:
            parent.mkdir(exist_ok=True)
        except OSError as exc:
            raise refuse(f"cannot create {parent}: {exc.strerror}") from exc
    if root_of(ci.seed, roots) != root:  # a link planted meanwhile
        raise refuse(f"leads outside the storage root {root}")
    data = seed_image(ci)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    return path


def read_seed(path: Path) -> dict[str, str]:
    """The documents of a seed image, by name (for checks)."""
    iso = pycdlib.PyCdlib()
    iso.open(str(path))
    try:
        out = {}
        for child in iso.list_children(rr_path="/"):
            name = child.rock_ridge.name().decode() if child.rock_ridge else ""
            if name in ("user-data", "meta-data", "network-config"):
                buf = io.BytesIO()
                iso.get_file_from_iso_fp(buf, rr_path=f"/{name}")
                out[name] = buf.getvalue().decode()
        label = iso.pvd.volume_identifier.decode().strip()
        out["label"] = label
        return out
    finally:
        iso.close()
