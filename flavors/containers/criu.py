"""A CRIU that works on this kernel, for checkpoint/restore of containers (the lab's
podman hosts put it first on their API service's PATH).

Debian 12's criu (3.17) fails ``criu check`` on recent kernels (``vdso: Unexpected rt vDSO
area bounds``); criu 4.1.1 works. :func:`ensure_criu` uses the system's ``criu`` when its
``criu check`` passes; otherwise it builds criu :data:`VERSION` once from Debian's source
package (the suite :data:`SUITE`, through apt directories of its own: the machine's apt
sources are never touched) and caches the binary under
``<cache>/<VERSION>/criu`` (``~/.cache/clustercore/criu`` unless ``CLUSTERCORE_CRIU_CACHE``
names another directory). ``CLUSTERCORE_CRIU`` names a criu binary to use instead. Where
no working criu can be had (no network, missing build dependencies, a kernel CRIU cannot
use), :func:`locate_criu` says why and :func:`ensure_criu` logs it and returns None.

The build needs Debian's ``build-essential pkgconf libbsd-dev libcap-dev libgnutls28-dev
libnet1-dev libnftables-dev libnl-3-dev libprotobuf-c-dev libprotobuf-dev
protobuf-c-compiler protobuf-compiler uuid-dev python3-protobuf`` (``./dev`` installs them)
and takes about 70 s on two cores; a lock file keeps two processes from building at once.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path

import attrs

log = logging.getLogger(__name__)

__all__ = ["SUITE", "VERSION", "Criu", "cache_root", "criu_check", "default_cache", "ensure_criu", "locate_criu"]

VERSION = "4.1.1"
SUITE = "trixie"  # the Debian release whose source package is criu VERSION
BINARY_ENV = "CLUSTERCORE_CRIU"
CACHE_ENV = "CLUSTERCORE_CRIU_CACHE"
KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
BUILD_TOOLS = ("make", "gcc", "pkg-config", "protoc-c", "protoc", "apt-get")
BUILD_TIMEOUT = 900.0


@attrs.frozen
class Criu:
    """A working criu (``path``) or why there is none (``reason``)."""

    path: Path | None
    reason: str = ""


def cache_root() -> Path:
    """clustercore's cache: ``$XDG_CACHE_HOME/clustercore`` (``~/.cache/clustercore``)."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "clustercore"


def default_cache() -> Path:
    """Where built criu binaries are kept: ``$CLUSTERCORE_CRIU_CACHE`` or
    ``<cache_root()>/criu`` (``~/.cache/clustercore/criu``)."""
    override = os.environ.get(CACHE_ENV)
    return Path(override) if override else cache_root() / "criu"


def criu_check(binary: str | Path) -> str | None:
    """None when ``binary check`` says the kernel supports checkpoint/restore, else why not."""
    try:
        done = subprocess.run([str(binary), "check"], capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"{binary} check: {exc}"
    if done.returncode == 0 and "Looks good" in done.stdout + done.stderr:
        return None
    return f"{binary} check failed ({done.returncode}): {_tail(done.stderr or done.stdout)}"


def locate_criu(cache_dir: Path | None = None, build: bool = True) -> Criu:
    """A criu whose ``criu check`` passes: ``$CLUSTERCORE_CRIU``, else the system's, else
    the cached build of :data:`VERSION`, else (``build``) one built now and cached."""
    override = os.environ.get(BINARY_ENV)
    if override:
        problem = criu_check(override)
        return Criu(None, f"{BINARY_ENV}={override}: {problem}") if problem else Criu(Path(override))
    system = shutil.which("criu")
    system_problem = criu_check(system) if system else "no criu on PATH"
    if system and system_problem is None:
        return Criu(Path(system))
    cache = (cache_dir or default_cache()) / VERSION
    binary = cache / "criu"
    if binary.exists() and criu_check(binary) is None:
        return Criu(binary)
    if not build:
        return Criu(None, f"system criu: {system_problem}; no working build in {cache}")
    cache.mkdir(parents=True, exist_ok=True)
    with _locked(cache / ".lock"):
        if not (binary.exists() and criu_check(binary) is None):  # another process may have built it
            problem = _build(binary)
            if problem is not None:
                return Criu(None, f"system criu: {system_problem}; building criu {VERSION}: {problem}")
    problem = criu_check(binary)
    return Criu(None, f"criu {VERSION} built but {problem}") if problem else Criu(binary)


def ensure_criu(cache_dir: Path | None = None) -> Path | None:
    """A working criu binary (see :func:`locate_criu`), or None with the reason logged."""
    found = locate_criu(cache_dir)
    if found.path is None:
        log.warning("no working CRIU, containers cannot be checkpointed: %s", found.reason)
    return found.path


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _mirror() -> str | None:
    """The Debian archive this machine installs from (its apt sources), for the deb-src list."""
    texts = [p.read_text() for p in [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]
             if p.is_file() and p.suffix in (".list", ".sources")]
    for text in texts:
        for uri in re.findall(r"(?m)^(?:URIs:\s*|deb(?:-src)?\s+(?:\[[^]]*\]\s+)?)(\S+)", text):
            if uri.rstrip("/").endswith("/debian"):
                return str(uri)
    return None


def _apt(apt_dir: Path, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """apt-get with sources, lists and cache of its own (``apt_dir``)."""
    options = ["-o", "Dir::Etc::SourceList=/dev/null", "-o", f"Dir::Etc::SourceParts={apt_dir / 'sources'}",
               "-o", f"Dir::State::Lists={apt_dir / 'lists'}", "-o", f"Dir::Cache={apt_dir / 'cache'}",
               "-o", "APT::Sandbox::User=root", "-q"]
    return subprocess.run(["apt-get", *options, *args], capture_output=True, text=True, timeout=BUILD_TIMEOUT,
                          cwd=cwd, check=False, env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})


def _build(binary: Path) -> str | None:
    """Build criu :data:`VERSION` from Debian's source package into ``binary``; None when
    done, else why it could not be."""
    missing = [tool for tool in BUILD_TOOLS if shutil.which(tool) is None]
    if missing:
        return f"missing build tools: {', '.join(missing)} (./dev installs them)"
    mirror = _mirror()
    if mirror is None:
        return "no Debian archive in the apt sources to fetch criu's source package from"
    log.info("building criu %s from Debian %s's source package (about 70 s)", VERSION, SUITE)
    with tempfile.TemporaryDirectory(prefix="clustercore-criu-") as tmp:
        work = Path(tmp)
        apt_dir = work / "apt"
        for sub in ("sources", "lists/partial", "cache/archives/partial"):
            (apt_dir / sub).mkdir(parents=True)
        (apt_dir / "sources" / f"{SUITE}-src.sources").write_text(
            f"Types: deb-src\nURIs: {mirror}\nSuites: {SUITE}\nComponents: main\nSigned-By: {KEYRING}\n")
        done = _apt(apt_dir, "update", cwd=work)
        if done.returncode != 0:
            return f"apt-get update: {_tail(done.stderr or done.stdout)}"
        # The orig tarball is all the build needs: a mirror missing the .dsc or the Debian
        # patches (apt-get then fails) still serves it.
        fetched = _apt(apt_dir, "source", "--download-only", "criu", cwd=work)
        tarballs = sorted(work.glob(f"criu_{VERSION}.orig.tar.*"))
        if not tarballs:
            found = ", ".join(p.name for p in work.glob("criu_*")) or "nothing"
            return (f"no criu_{VERSION}.orig.tar.* from Debian {SUITE} (downloaded {found}; apt-get source: "
                    f"{_tail(fetched.stderr or fetched.stdout)})")
        with tarfile.open(tarballs[0]) as archive:
            archive.extractall(work / "src", filter="tar")  # a symlink to the system protobuf headers
        tops = [p for p in (work / "src").iterdir() if p.is_dir()]
        if len(tops) != 1:
            return f"unexpected layout of {tarballs[0].name}: {[p.name for p in tops]}"
        try:
            done = subprocess.run(["make", "-j2", "criu"], cwd=tops[0], capture_output=True, text=True,
                                  timeout=BUILD_TIMEOUT, check=False)
        except subprocess.TimeoutExpired:
            return f"make criu took over {BUILD_TIMEOUT:.0f}s"
        built = tops[0] / "criu" / "criu"
        if done.returncode != 0 or not built.exists():
            return f"make criu failed ({done.returncode}): {_tail(done.stderr or done.stdout)}"
        partial = binary.with_name(binary.name + ".partial")
        shutil.copy2(built, partial)
        partial.replace(binary)
    log.info("criu %s built: %s", VERSION, binary)
    return None


def _tail(text: str, limit: int = 600) -> str:
    text = " ".join(text.strip().splitlines()[-6:])
    return text[-limit:] or "no output"
