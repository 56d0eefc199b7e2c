"""Connections to libvirt hosts: kept per URI, reopened when they die, opened under a
per-host lock (a host that hangs never blocks the others), with libvirt's event loop and
keepalives so a dead daemon is noticed; :class:`VirtError`, the flavor's error for a
failed libvirt operation.

A connection is closed when the last thread holding it lets it go (a finalizer), never
under a thread still inside a call on it: libvirt frees a closed connection at once, and
a call running on it then crashes the process (a statistics sample on a host's lane while
the flavor was closed did, in a clean-clone run)."""

from __future__ import annotations

import contextlib
import subprocess
import threading
import weakref
from collections.abc import Iterator

import libvirt

from clustercore.errors import ClusterError
from clustercore.model import Host
from flavors.virt.uri import uri_problem


class VirtError(ClusterError):
    """A libvirt operation failed: ``op`` on ``vm`` at ``host``."""

    def __init__(self, op: str, vm: str, host: str, detail: str) -> None:
        self.op, self.vm, self.host, self.detail = op, vm, host, detail
        super().__init__(f"{op} {vm} on {host}: {detail}")


def _quiet(ctx: object, err: object) -> None:
    """libvirt prints every error to stderr by default; errors reach us as exceptions."""


libvirt.registerErrorHandler(_quiet, None)


_LOOP = threading.Lock()
_loop_started = False


def _event_loop() -> None:
    """libvirt's default event loop, in a daemon thread, once per process: with it a
    connection notices at once that its daemon died (a power cut) and keepalives close
    connections to daemons that stopped answering, so ``isAlive()`` tells the truth."""
    global _loop_started
    with _LOOP:
        if _loop_started:
            return
        libvirt.virEventRegisterDefaultImpl()

        def run() -> None:
            while True:
                libvirt.virEventRunDefaultImpl()

        threading.Thread(target=run, name="libvirt-events", daemon=True).start()
        _loop_started = True


def _hint(uri: str, error: str) -> str:
    """What libvirt's message leaves out: a TLS handshake the host ended is its refusal of
    this client's certificate (libvirtd's log says why)."""
    if uri.startswith("qemu+tls://") and "TLS confirmation" in error:
        return (" (the host refused this client's certificate: not signed by the CA of its ca_file, "
                "or not in its tls_allowed_dn_list)")
    return ""


def _close(pointer: object) -> None:
    """Close the connection behind ``pointer`` (its Python object is gone: nobody uses it)."""
    with contextlib.suppress(libvirt.libvirtError):
        libvirt.virConnect(pointer).close()


class Connections:
    """One kept connection per host URI."""

    def __init__(self) -> None:
        self._conns: dict[str, libvirt.virConnect] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def connect(self, host: Host) -> libvirt.virConnect:
        """A connection to ``host``'s libvirtd, kept for later calls. Opening holds only
        this host's lock: a host that hangs never blocks the others."""
        uri = host.address
        problem = uri_problem(uri)
        if problem is not None:
            raise VirtError("connect", "-", host.name, problem)
        with self._guard:
            opening = self._locks.setdefault("connect:" + uri, threading.Lock())
        with opening:
            conn = self._conns.get(uri)
            if conn is not None:
                with contextlib.suppress(libvirt.libvirtError):
                    if conn.isAlive():
                        return conn
            _event_loop()
            try:
                conn = libvirt.open(uri)
                weakref.finalize(conn, _close, conn._o)  # closed once nobody holds it
                if not uri.startswith("test:"):
                    conn.setKeepAlive(5, 3)  # a silent daemon closes the connection in 15-20 s
            except libvirt.libvirtError as exc:
                raise VirtError("connect", "-", host.name, f"cannot open {uri}: {exc}{_hint(uri, str(exc))}") from exc
            with self._guard:
                self._conns[uri] = conn
            return conn

    def answers(self, host: Host, timeout: float = 5.0) -> bool:
        """Whether ``host``'s libvirtd answers within ``timeout`` (a fresh ``virsh`` in a
        child process, so a hung daemon costs only the timeout): what a manager polls
        for heartbeats, as oVirt's engine polls VDSM."""
        if uri_problem(host.address) is not None:
            return False  # never virsh's default connection
        try:
            run = subprocess.run(["virsh", "-c", host.address, "version", "--daemon"], capture_output=True,
                                 timeout=timeout, check=False, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            return False
        return run.returncode == 0

    def close(self) -> None:
        """Let every kept connection go: each is closed by its finalizer once no call holds it."""
        with self._guard:
            self._conns.clear()

    @contextlib.contextmanager
    def host_lock(self, host: Host) -> Iterator[None]:
        """Serialises binds on one host (device allocation reads, then defines)."""
        with self._guard:
            lock = self._locks.setdefault(host.address, threading.Lock())
        with lock:
            yield
