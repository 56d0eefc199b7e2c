"""Build the project's real test guest from Debian packages, cached.

``build_guest(cache_dir)`` fetches the current ``linux-image-*-cloud-amd64`` and
``busybox-static`` with ``apt-get download`` (never installs them), unpacks them with
``dpkg-deb -x``, compiles the guest program (``guest_prog.c``, ``gcc -O2 -static``), packs
an initramfs with busybox itself (``init.sh`` as ``/init``, the virtio modules, the
program) and makes a 64 MiB ext4 disk template (``mke2fs -d``, ``qemu-img convert -O
qcow2``). The result is cached under a key of the two package versions and a hash of the
program and init script: a second call with the same inputs returns the built files.
``clone(image, path)`` makes a per-VM qcow2 overlay of the template. The recipe is the
one verified in the project's GUEST notes.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import attrs

from clustercore.errors import ClusterError

log = logging.getLogger(__name__)

HERE = Path(__file__).parent
PROGRAM = HERE / "guest_prog.c"
INIT = HERE / "init.sh"
KERNEL_META = "linux-image-cloud-amd64"
BUSYBOX = "busybox-static"
# Dependency order (the cloud kernel ships no modules.dep), from GUEST.md.
MODULES = ("virtio_ring", "virtio", "virtio_pci_modern_dev", "virtio_pci_legacy_dev", "virtio_pci", "virtio_blk",
           "failover", "net_failover", "virtio_net")
DISK_SIZE = "64M"
DISK_LABEL = "data"
FORMAT = "1"  # bump when the layout of a built guest changes


class GuestBuildError(ClusterError):
    """Building the guest failed at ``step``: ``command`` said ``output``."""

    def __init__(self, step: str, command: list[str], output: str) -> None:
        self.step, self.command, self.output = step, command, output
        super().__init__(f"guest build: {step}: {' '.join(command)}: {output.strip()[-2000:]}")


@attrs.frozen
class GuestImage:
    """A built guest: kernel, initramfs and disk template (qcow2), all in the cache."""

    kernel: Path
    initrd: Path
    template: Path
    kernel_version: str  # the kernel's release, as uname -r says: 6.1.0-57-cloud-amd64


def _run(step: str, command: list[str], cwd: Path | None = None, stdin: bytes | None = None) -> str:
    try:
        done = subprocess.run(command, cwd=cwd, input=stdin, capture_output=True, timeout=600, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise GuestBuildError(step, command, str(exc)) from exc
    if done.returncode != 0:
        raise GuestBuildError(step, command, (done.stderr or done.stdout).decode(errors="replace"))
    return done.stdout.decode(errors="replace")


def _lists_stamp() -> str:
    """Changes whenever apt's package lists do (``apt-get update``)."""
    lists = Path("/var/lib/apt/lists")
    entries = sorted(f"{p.name}:{p.stat().st_mtime_ns}" for p in lists.glob("*Packages*")) if lists.is_dir() else []
    return hashlib.sha256("\n".join(entries).encode()).hexdigest()[:16]


def kernel_package(cache_dir: Path | None = None) -> str:
    """The ``linux-image-X-cloud-amd64`` package apt's ``linux-image-cloud-amd64`` depends on;
    remembered in ``cache_dir`` until apt's lists change (``apt-cache`` takes 0.7 s here)."""
    memo = None if cache_dir is None else cache_dir / "kernel-package"
    stamp = _lists_stamp()
    if memo is not None and memo.is_file():
        remembered, _, name = memo.read_text().strip().partition(" ")
        if remembered == stamp and name:
            return name
    name = _resolve_kernel()
    if memo is not None:
        memo.write_text(f"{stamp} {name}\n")
    return name


def _resolve_kernel() -> str:
    out = _run("resolve kernel", ["apt-cache", "depends", KERNEL_META])
    for line in out.splitlines():
        key, _, value = line.strip().partition(":")
        name = value.strip()
        if key == "Depends" and name.startswith("linux-image-") and name.endswith("-cloud-amd64"):
            return name
    raise GuestBuildError("resolve kernel", ["apt-cache", "depends", KERNEL_META], f"no kernel in:\n{out}")


def _deb(debs: Path, package: str) -> Path | None:
    found = sorted(debs.glob(f"{package}_*.deb"))
    return found[-1] if found else None


def fetch(debs: Path, package: str) -> Path:
    """The ``.deb`` of ``package`` in ``debs``, downloaded with ``apt-get download`` when
    missing (``apt-get update`` once, only if apt has no list for it)."""
    if (deb := _deb(debs, package)) is not None:
        return deb
    debs.mkdir(parents=True, exist_ok=True)
    command = ["apt-get", "download", "-q", package]
    try:
        _run(f"download {package}", command, cwd=debs)
    except GuestBuildError as exc:
        if "Unable to locate" not in exc.output and "Unable to fetch" not in exc.output \
                and "Can't select" not in exc.output and "404" not in exc.output:
            raise
        log.info("apt-get download %s failed (%s): apt-get update", package, exc.output.strip())
        _run("apt-get update", ["apt-get", "update", "-q"])
        _run(f"download {package}", command, cwd=debs)
    if (deb := _deb(debs, package)) is None:
        raise GuestBuildError(f"download {package}", command, f"no {package}_*.deb in {debs}")
    return deb


def deb_version(deb: Path) -> str:
    return _run("read version", ["dpkg-deb", "-f", str(deb), "Version"]).strip()


def cache_key(kernel_deb: Path, busybox_deb: Path) -> str:
    """Package names and versions, and the hash of the program and init script."""
    digest = hashlib.sha256(FORMAT.encode())
    for deb in (kernel_deb, busybox_deb):
        digest.update(f"{deb.name.partition('_')[0]}={deb_version(deb)}\0".encode())
    for source in (PROGRAM, INIT):
        digest.update(source.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _image(out: Path) -> GuestImage:
    version = (out / "kernel-version").read_text().strip()
    return GuestImage(kernel=out / "vmlinuz", initrd=out / "initrd.gz", template=out / "base.qcow2",
                      kernel_version=version)


def build_guest(cache_dir: Path) -> GuestImage:
    """The guest built in ``cache_dir`` (``debs/`` and one directory per cache key);
    reused when already built from the same packages, program and init script."""
    cache_dir = cache_dir.absolute()
    with _locked(cache_dir / ".lock"):
        debs = cache_dir / "debs"
        kernel_deb = fetch(debs, kernel_package(cache_dir))
        busybox_deb = fetch(debs, BUSYBOX)
        out = cache_dir / f"guest-{cache_key(kernel_deb, busybox_deb)}"
        if (out / "kernel-version").is_file():
            log.debug("guest cached in %s", out)
            return _image(out)
        with tempfile.TemporaryDirectory(prefix="build-", dir=cache_dir) as tmp:
            staged = Path(tmp) / "out"
            staged.mkdir()
            _build(Path(tmp), staged, kernel_deb, busybox_deb)
            shutil.rmtree(out, ignore_errors=True)
            staged.rename(out)
        log.info("guest built in %s", out)
        return _image(out)


def _build(work: Path, out: Path, kernel_deb: Path, busybox_deb: Path) -> None:
    kernel, busybox = work / "kernel", work / "busybox"
    _run("unpack kernel", ["dpkg-deb", "-x", str(kernel_deb), str(kernel)])
    _run("unpack busybox", ["dpkg-deb", "-x", str(busybox_deb), str(busybox)])
    vmlinuz = sorted((kernel / "boot").glob("vmlinuz-*"))
    if not vmlinuz:
        raise GuestBuildError("unpack kernel", ["dpkg-deb", "-x", str(kernel_deb)], "no boot/vmlinuz-*")
    version = vmlinuz[-1].name.removeprefix("vmlinuz-")
    root = work / "initramfs"
    for sub in ("bin", "dev", "proc", "sys", "data", "lib/modules"):
        (root / sub).mkdir(parents=True)
    shutil.copy2(busybox / "bin" / "busybox", root / "bin" / "busybox")
    modules = kernel / "lib" / "modules" / version / "kernel"
    for name in MODULES:
        found = sorted(modules.rglob(f"{name}.ko"))
        if not found:
            raise GuestBuildError("modules", ["find", str(modules), "-name", f"{name}.ko"], "not in the kernel package")
        shutil.copy2(found[0], root / "lib" / "modules" / f"{name}.ko")
    shutil.copy2(INIT, root / "init")
    (root / "init").chmod(0o755)
    _run("compile", ["gcc", "-O2", "-static", "-o", str(root / "bin" / "clustercore-guest"), str(PROGRAM)])
    _run("console node", ["mknod", "-m", "600", str(root / "dev" / "console"), "c", "5", "1"])
    bb = str(root / "bin" / "busybox")
    listing = _run("list initramfs", [bb, "find", "."], cwd=root)
    archive = subprocess.run([bb, "cpio", "-o", "-H", "newc"], cwd=root, input=listing.encode(),
                             capture_output=True, check=False)
    if archive.returncode != 0:
        raise GuestBuildError("pack initramfs", [bb, "cpio", "-o", "-H", "newc"], archive.stderr.decode())
    packed = subprocess.run(["gzip", "-9"], input=archive.stdout, capture_output=True, check=False)
    if packed.returncode != 0:
        raise GuestBuildError("pack initramfs", ["gzip", "-9"], packed.stderr.decode())
    (out / "initrd.gz").write_bytes(packed.stdout)
    shutil.copy2(vmlinuz[-1], out / "vmlinuz")
    disk = work / "disk"
    disk.mkdir()
    (disk / "README").write_text("clustercore test guest data disk\n")
    raw = work / "base.raw"
    _run("make disk", ["mke2fs", "-q", "-t", "ext4", "-L", DISK_LABEL, "-d", str(disk), str(raw), DISK_SIZE])
    _run("make template", ["qemu-img", "convert", "-O", "qcow2", str(raw), str(out / "base.qcow2")])
    (out / "kernel-version").write_text(version + "\n")


def clone(image: GuestImage, path: Path) -> Path:
    """A qcow2 overlay of the template at ``path`` (its directory created), for one VM."""
    path.parent.mkdir(parents=True, exist_ok=True)
    _run("clone", ["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(image.template), "-F", "qcow2", str(path)])
    return path


def read_disk_file(disk: Path, name: str) -> str:
    """The file ``name`` at the root of the guest disk ``disk`` (qcow2, may be in use: read
    with ``qemu-img convert -U`` to raw and ``debugfs``, nothing mounted); "" when absent."""
    with tempfile.TemporaryDirectory(prefix="clustercore-disk-") as tmp:
        raw = Path(tmp) / "disk.raw"
        _run("read disk", ["qemu-img", "convert", "-U", "-O", "raw", str(disk), str(raw)])
        try:
            done = subprocess.run(["debugfs", "-R", f"cat /{name}", str(raw)], capture_output=True, timeout=60,
                                  check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise GuestBuildError("read disk", ["debugfs", "-R", f"cat /{name}", str(raw)], str(exc)) from exc
        return done.stdout.decode(errors="replace")


__all__ = ["GuestBuildError", "GuestImage", "build_guest", "clone", "fetch", "kernel_package", "read_disk_file"]
