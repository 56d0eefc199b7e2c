"""A lab of real libvirt hosts on one machine, for tests, demos and benchmarks.

Each :class:`LabHost` is one ``libvirtd`` (with its ``virtlogd``) in its own mount and PID
namespace, with its own ``/run``, ``/var/lib/libvirt``, ``/var/log/libvirt`` and
``/etc/libvirt`` (a copy), its own host uuid, TCP port, migration and display port ranges, reachable
at ``qemu+tcp://127.0.0.1:PORT/system``. The recipe is the one verified in the project's
LAB notes. Needs root and the Debian packages ``libvirt-daemon-system qemu-system-x86``.

Powering a host off kills the namespace's first process with SIGKILL: every process of
the host dies at once, its QEMU guests included (a real power cut). :class:`Lab` is a
context manager and always tears everything down, leaving no process behind.

    with Lab(3) as lab:
        uri = lab.hosts[0].uri
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from types import TracebackType

import attrs

BASE_PORT = 16600
MIGRATION_BASE = 49400
DISPLAY_BASE = 20000
WEBSOCKET_BASE = 35000
# Ports of lab host k (k = its TCP port - BASE_PORT, up to 250): display 20000+50k..,
# websocket 35000+50k.., migration 49400+20k..: ranges never overlap.
SCRIPT = """set -e
mount -t tmpfs tmpfs /run
mkdir -p /run/libvirt /run/lock
mount --bind {dir}/lib /var/lib/libvirt
mount --bind {dir}/cache /var/cache/libvirt
mount --bind {dir}/log /var/log/libvirt
mount --bind {dir}/etc /etc/libvirt
virtlogd -d
libvirtd --listen >>{dir}/libvirtd.out 2>&1 &
wait
"""


class LabError(RuntimeError):
    pass


def kvm_available() -> bool:
    return os.access("/dev/kvm", os.R_OK | os.W_OK)


def domain_type() -> str:
    """``kvm`` where /dev/kvm is usable, else ``qemu`` (TCG)."""
    return "kvm" if kvm_available() else "qemu"


@attrs.define(eq=False)
class LabHost:
    name: str
    index: int
    root: Path
    port: int
    host_uuid: str = attrs.field(factory=lambda: str(uuid.uuid4()))
    process: subprocess.Popen[bytes] | None = None

    @property
    def uri(self) -> str:
        return f"qemu+tcp://127.0.0.1:{self.port}/system"

    @property
    def migration_ports(self) -> tuple[int, int]:
        """20 ports of its own, derived from its TCP port so two labs never share them."""
        low = MIGRATION_BASE + 20 * (self.port - BASE_PORT)
        return low, low + 19

    def prepare(self) -> None:
        for sub in ("lib", "cache", "log"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        (self.root / "lib" / "qemu").mkdir(exist_ok=True)
        etc = self.root / "etc"
        if not etc.exists():
            shutil.copytree("/etc/libvirt", etc, symlinks=True)
            for autostart in ("qemu/networks/autostart", "storage/autostart"):
                shutil.rmtree(etc / autostart, ignore_errors=True)
        (etc / "libvirtd.conf").write_text(
            f'listen_tcp = 1\nlisten_tls = 0\nlisten_addr = "127.0.0.1"\ntcp_port = "{self.port}"\n'
            f'auth_tcp = "none"\nhost_uuid = "{self.host_uuid}"\nlog_outputs = "3:stderr"\n')
        low, high = self.migration_ports
        display = DISPLAY_BASE + 50 * (self.port - BASE_PORT)  # VNC/SPICE: the hosts share one network
        websocket = WEBSOCKET_BASE + 50 * (self.port - BASE_PORT)
        (etc / "qemu.conf").write_text(
            f'migration_port_min = {low}\nmigration_port_max = {high}\n'
            f'remote_display_port_min = {display}\nremote_display_port_max = {display + 49}\n'
            f'remote_websocket_port_min = {websocket}\nremote_websocket_port_max = {websocket + 49}\n'
            'security_driver = "none"\nnamespaces = [ ]\nuser = "root"\ngroup = "root"\ndynamic_ownership = 0\n')

    def power_on(self, timeout: float = 30.0) -> None:
        if self.running:
            return
        self.prepare()
        script = SCRIPT.format(dir=self.root)
        self.process = subprocess.Popen(
            ["unshare", "-m", "-p", "--fork", "--mount-proc", "--propagation", "private", "--kill-child=SIGKILL",
             "sh", "-c", script],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        self.wait_ready(timeout)

    def wait_ready(self, timeout: float) -> None:
        import libvirt

        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise LabError(f"{self.name}: libvirtd exited: {self.log_tail()}")
            try:
                libvirt.open(self.uri).close()
                return
            except libvirt.libvirtError as exc:
                last = exc
                time.sleep(0.2)
        raise LabError(f"{self.name}: libvirtd not reachable at {self.uri} after {timeout}s: {last}; "
                       f"{self.log_tail()}")

    def log_tail(self) -> str:
        out = self.root / "libvirtd.out"
        return out.read_text()[-2000:] if out.exists() else "(no log)"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def power_off(self) -> None:
        """A power cut: every process of the host, guests included, dies now."""
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=10)
        self.process = None


class Lab:
    """``n`` lab hosts named ``lab1``.. ``labN`` under a temporary directory."""

    def __init__(self, n: int = 3, root: Path | None = None, base_port: int = BASE_PORT) -> None:
        self._tmp = None if root is not None else tempfile.TemporaryDirectory(prefix="clustercore-lab-")
        self.root = root or Path(self._tmp.name)  # type: ignore[union-attr]
        self.hosts = [LabHost(f"lab{i + 1}", i, self.root / f"lab{i + 1}", base_port + i) for i in range(n)]

    def start(self) -> Lab:
        try:
            for host in self.hosts:
                host.power_on()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        for host in self.hosts:
            host.power_off()
        if self._tmp is not None:
            with contextlib.suppress(OSError):
                self._tmp.cleanup()

    def __enter__(self) -> Lab:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()
