"""cloud-init NoCloud seeds: an ISO 9660 image labelled ``cidata`` holding ``user-data``,
``meta-data`` and optionally ``network-config`` (what cloud-init looks for on a CD-ROM).
Built in Python (pycdlib), no external tool."""

from __future__ import annotations

import io
from pathlib import Path

import pycdlib

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


def write_seed(ci: CloudInit) -> Path:
    """Write the seed image at ``ci.seed`` (creating its directory)."""
    path = Path(ci.seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(seed_image(ci))
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
