"""The lab's container image, built locally (no registry): busybox and nothing else.

Importing the same root filesystem on two podman hosts gives two image ids (the import
time is part of the image), and a container checkpointed on one host then cannot be
restored on the other. So the root filesystem (:func:`rootfs_tar`: the static
``/bin/busybox``, its applet links, ``etc/passwd`` and ``etc/group``; about 2 MB, byte for
byte the same on every build) is imported *once* into one host, exported as a
docker-archive, and that one archive (:func:`image_archive`, cached by the root
filesystem's digest) is loaded into every host (:func:`load_image`): the same image id
everywhere, also across labs and runs.

    archive = image_archive(client_of_any_host, cache_dir)
    image_id = load_image(client_of_each_host, archive)
"""

from __future__ import annotations

import hashlib
import io
import shutil
import subprocess
import tarfile
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from podman import PodmanClient

__all__ = ["IMAGE", "ImageError", "image_archive", "load_image", "rootfs_tar"]

IMAGE = "localhost/clustercore-busybox:1"
CHANGES = ('CMD ["/bin/sh"]', "ENV PATH=/bin")
PASSWD = "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n"
GROUP = "root:x:0:\nnogroup:x:65534:\n"


class ImageError(RuntimeError):
    """The lab image could not be made or loaded on ``host``."""

    def __init__(self, host: str, step: str, detail: str) -> None:
        super().__init__(f"{host}: image {IMAGE}: {step}: {detail}")
        self.host, self.step, self.detail = host, step, detail


def _busybox() -> Path:
    found = shutil.which("busybox") or "/bin/busybox"
    if not Path(found).exists():
        raise ImageError("-", "rootfs", "no busybox (Debian package busybox-static)")
    return Path(found)


def rootfs_tar() -> bytes:
    """The image's root filesystem as a tar, the same bytes on every call (fixed times,
    owners and order)."""
    busybox = _busybox()
    applets = subprocess.run([str(busybox), "--list"], capture_output=True, text=True, check=True).stdout.split()
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.GNU_FORMAT) as tar:

        def add(name: str, kind: bytes, data: bytes = b"", mode: int = 0o644, link: str = "") -> None:
            info = tarfile.TarInfo(name)
            info.type, info.mode, info.mtime, info.linkname, info.size = kind, mode, 0, link, len(data)
            tar.addfile(info, io.BytesIO(data) if data else None)

        for directory in ("bin", "etc", "proc", "sys", "dev", "tmp", "root", "shared"):
            add(directory, tarfile.DIRTYPE, mode=0o1777 if directory == "tmp" else 0o755)
        add("bin/busybox", tarfile.REGTYPE, busybox.read_bytes(), 0o755)
        for applet in sorted(set(applets) - {"busybox"}):
            add(f"bin/{applet}", tarfile.SYMTYPE, link="busybox", mode=0o777)
        add("etc/passwd", tarfile.REGTYPE, PASSWD.encode())
        add("etc/group", tarfile.REGTYPE, GROUP.encode())
    return out.getvalue()


def image_archive(client: PodmanClient, cache_dir: Path, host: str = "-") -> Path:
    """The image's docker-archive under ``cache_dir`` (named by the root filesystem's
    digest), made on first use by importing the root filesystem into ``client``'s host
    and exporting it. Load this same file into every host."""
    rootfs = rootfs_tar()
    archive = cache_dir / f"clustercore-busybox-{hashlib.sha256(rootfs).hexdigest()[:16]}.tar"
    if archive.exists():
        return archive
    cache_dir.mkdir(parents=True, exist_ok=True)
    answer = client.api.post("/images/import", params={"reference": IMAGE, "changes": list(CHANGES)},
                             data=rootfs, headers={"Content-Type": "application/x-tar"})
    if not answer.ok:
        raise ImageError(host, "import", f"{answer.status_code}: {answer.text[:300]}")
    exported = client.api.get(f"/images/{IMAGE}/get", params={"format": "docker-archive"}, stream=True)
    if not exported.ok:
        raise ImageError(host, "export", f"{exported.status_code}: {exported.text[:300]}")
    partial = archive.with_suffix(".partial")
    with partial.open("wb") as out:
        for chunk in exported.iter_content(1 << 20):
            out.write(chunk)
    partial.replace(archive)
    return archive


def load_image(client: PodmanClient, archive: Path, host: str = "-") -> str:
    """Load ``archive`` into ``client``'s host; the image's id."""
    answer = client.api.post("/images/load", data=archive.read_bytes(),
                             headers={"Content-Type": "application/x-tar"})
    if not answer.ok:
        raise ImageError(host, "load", f"{answer.status_code}: {answer.text[:300]}")
    image = client.images.get(IMAGE)
    return str(image.id)
