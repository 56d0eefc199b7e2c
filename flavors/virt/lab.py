"""A lab of real libvirt hosts on one machine, for tests, demos and benchmarks.

Each :class:`LabHost` is one ``libvirtd`` (with ``virtlogd``, ``virtlockd``) in its own mount and PID
namespace, with its own ``/run``, ``/var/lib/libvirt``, ``/var/log/libvirt`` and
``/etc/libvirt`` (a copy, :mod:`flavors.virt.labconfig`), its own host uuid, TCP port,
migration and display port ranges, reachable at ``qemu+tcp://127.0.0.1:PORT/system``,
or with ``Lab(transport="tls")`` at ``qemu+tls://``
(a lab CA's certificates, migration TLS too) or ``"ssh"`` at ``qemu+ssh://`` (an sshd per
host): :mod:`flavors.virt.labtransport`. The recipe is the one verified in the project's
LAB notes. Needs root and the Debian packages ``libvirt-daemon-system qemu-system-x86``.

Powering a host off kills the namespace's first process with SIGKILL: every process of
the host dies at once, its QEMU guests included (a real power cut). A host can also hang
(its libvirtd stopped with SIGSTOP: the guests keep running, nothing answers) or lose its
network (hung, and unreachable for a soft fence too). With ``bmc=True`` every host has an
IPMI BMC (:mod:`flavors.virt.labbmc`, pyghmi's BMC server on a loopback UDP port) whose power off is
that power cut: real fence agents (``fence_ipmilan``, ``ipmitool``, pyghmi) fence lab
hosts for real. :class:`Lab` is a context manager and always tears everything down,
leaving no process behind, also when the process gets SIGTERM or SIGINT (Ctrl-C) while a
lab is up (:mod:`flavors.virt.labsignals`). Every derived port is checked at construction,
each TCP port checked free before its host starts (:mod:`flavors.virt.labnet`). QEMUs run
without cgroups: two hosts run same-named domains, power cuts leave no stale cgroups.

Storage: ``lab.shared`` is a directory every host and this process see at the same path
(the way an NFS domain is mounted); ``host.local_dir`` is a host's own
``/var/lib/libvirt/images`` as this process sees it. ``host.lose_path(p)`` hides ``p`` in
that host's mount namespace only (an empty tmpfs over it) until ``restore_path(p)``.
Disk leases: each host runs ``virtlockd`` and ``lock_manager = "lockd"`` with direct
leases (a lock on the disk file itself while the guest's CPUs run; a power cut frees it;
:func:`flavors.virt.leases.held` sees it). Guest networks: ``lab.switch(name)`` is a
learning L2 switch over UDP for udp NICs (:mod:`flavors.virt.labswitch`).

Domain types: :func:`domain_type` is ``kvm`` wherever /dev/kvm is usable, for the OS-less
guests that boot nothing; :func:`linux_domain_type` is for real Linux guests, ``qemu``
(TCG) where /dev/kvm is missing or is ``kvm-pvm`` (which cannot boot Linux, see GUEST.md).

    with Lab(3) as lab:
        uri = lab.hosts[0].uri
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from types import TracebackType

import attrs

from clustercore.model import Host
from flavors.virt.labbmc import LabBmcs
from flavors.virt.labconfig import SCRIPT, configure
from flavors.virt.labnet import BASE_PORT, LabError, check_free, check_ports, host_ports
from flavors.virt.labprocs import alive, tree
from flavors.virt.labsignals import guard
from flavors.virt.labswitch import LabSwitch, LabSwitches
from flavors.virt.labtransport import LabAccess, Transport

__all__ = ["BASE_PORT", "Lab", "LabBmcs", "LabError", "LabHost", "LabSwitch", "domain_type", "linux_domain_type"]
# Ports of host k = TCP port - BASE_PORT (k < 1200): migration 24000+10k.., display 36000+10k..,
# websocket 48000+10k.. (10 each), BMC (UDP) 6230+k; no two hosts share one (table in labnet.py).


def kvm_available() -> bool:
    return os.access("/dev/kvm", os.R_OK | os.W_OK)


def domain_type() -> str:
    """``kvm`` where /dev/kvm is usable, else ``qemu`` (TCG)."""
    return "kvm" if kvm_available() else "qemu"


def linux_domain_type() -> str:
    """The domain type for a real Linux guest: ``qemu`` (TCG) where /dev/kvm is missing or
    is ``kvm-pvm`` (/sys/module/kvm_pvm), which cannot boot a Linux kernel; else ``kvm``."""
    return "kvm" if kvm_available() and not os.path.exists("/sys/module/kvm_pvm") else "qemu"


@attrs.define(eq=False)
class LabHost:
    name: str
    index: int
    root: Path
    port: int
    host_uuid: str = attrs.field(factory=lambda: str(uuid.uuid4()))
    process: subprocess.Popen[bytes] | None = None
    reachable: bool = True
    lost_paths: set[str] = attrs.field(factory=set)  # the paths lose_path hid in its namespace
    access: LabAccess | None = None  # how it is reached (flavors.virt.labtransport); None: plain TCP
    sshd: str = attrs.field(default="", init=False, repr=False)  # the script's line that starts its sshd

    @property
    def uri(self) -> str:
        """Its URI by the lab's transport: ``qemu+tcp://``, ``qemu+tls://`` or ``qemu+ssh://``."""
        return self.access.uri(self.root, self.port) if self.access is not None else self.tcp_uri

    @property
    def tcp_uri(self) -> str:
        """Its plain TCP URI, open whatever the lab's transport (a benchmark's unencrypted baseline)."""
        return f"qemu+tcp://127.0.0.1:{self.port}/system"

    @property
    def local_dir(self) -> Path:
        """This host's local storage as this process sees it: the directory its namespace
        mounts as ``/var/lib/libvirt/images`` (``<root>/lib/images``, created here). The same
        path on another host is another directory: local disks are not shared."""
        path = self.root / "lib" / "images"
        path.mkdir(parents=True, exist_ok=True)
        return path

    @property
    def migration_ports(self) -> tuple[int, int]:
        """10 ports of its own, derived from its TCP port so two labs never share them."""
        return host_ports(self.port)["migration"]

    def prepare(self) -> None:
        self.sshd = configure(self.name, self.root, self.port, self.host_uuid, self.access)

    def power_on(self, timeout: float = 30.0) -> None:
        if self.running:
            return
        self.prepare()
        for port in [self.port, *(self.access.ports(self.port) if self.access else [])]:
            check_free(self.name, port)
        script = SCRIPT.format(dir=self.root, sshd=self.sshd)
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

    def active_domains(self, paused: bool = True) -> list[str]:
        """The names of the domains running on this host, by its libvirtd, sorted; without
        the paused ones (such as a migration's incoming end) when ``paused`` is False."""
        import libvirt

        conn = libvirt.open(self.uri)
        try:
            flags = libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE if paused else libvirt.VIR_CONNECT_LIST_DOMAINS_RUNNING
            return sorted(d.name() for d in conn.listAllDomains(flags))
        finally:
            conn.close()

    def qemu_guests(self) -> list[str]:
        """The guests this host's QEMU processes run, from their command lines (what runs
        whether libvirtd answers or not), sorted."""
        names = []
        for pid in self.pids("qemu-system-x86"):  # the kernel's 15-character name of qemu-system-x86_64
            with contextlib.suppress(OSError):
                args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
                if b"-name" in args:
                    value = args[args.index(b"-name") + 1].decode()
                    names.append(value.removeprefix("guest=").split(",")[0])
        return sorted(names)

    def log_tail(self) -> str:
        out = self.root / "libvirtd.out"
        return out.read_text()[-2000:] if out.exists() else "(no log)"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def power_off(self) -> None:
        """A power cut: every process of the host (libvirtd, virtlogd, virtlockd, its QEMU
        guests) is killed at once; returns when all are gone, so their locks (disk leases)
        and ports are free."""
        self.reachable = True  # a host that boots again has its network back
        self.lost_paths.clear()  # its mount namespace dies with it
        if self.process is None:
            return
        doomed = tree(self.process.pid)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)  # unshare --kill-child: the namespace dies
        for pid in doomed:  # and every process we saw, daemons in their own sessions included
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=10)
        deadline = time.monotonic() + 10
        while any(alive(pid, seen) for pid, seen in doomed.items()) and time.monotonic() < deadline:
            time.sleep(0.01)
        self.process = None

    def pids(self, command: str) -> list[int]:
        """The processes of this host named ``command``."""
        if self.process is None:
            return []
        return [pid for pid, (name, _) in tree(self.process.pid).items() if name == command]

    def init_pid(self) -> int:
        """The PID (in this process's namespace) of the host's first process, the child of
        ``unshare``: its mount namespace is the host's."""
        if self.process is None or not self.running:
            raise LabError(f"{self.name}: powered off")
        pid = self.process.pid
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError, ValueError):
                return int(Path(f"/proc/{pid}/task/{pid}/children").read_text().split()[0])
            time.sleep(0.05)
        raise LabError(f"{self.name}: unshare (pid {pid}) has no child")

    def in_namespace(self, *command: str) -> subprocess.CompletedProcess[str]:
        """Run ``command`` in this host's mount namespace (``nsenter -m``), output captured."""
        return subprocess.run(["nsenter", "-t", str(self.init_pid()), "-m", "--", *command],
                              capture_output=True, text=True, timeout=30, check=False)

    def _mount_command(self, *command: str) -> None:
        done = self.in_namespace(*command)
        if done.returncode != 0:
            raise LabError(f"{self.name}: {' '.join(command)}: {(done.stderr or done.stdout).strip()}")

    def lose_path(self, path: str | Path) -> None:
        """``path`` (a directory) disappears for this host only, as an unmounted or dead NFS
        share would: an empty tmpfs is mounted over it in the host's mount namespace. Files
        already open (a running guest's disk) stay open. Undone by :meth:`restore_path` or
        a power cycle."""
        if str(path) not in self.lost_paths:
            self._mount_command("mount", "-t", "tmpfs", "-o", "size=1m,mode=0755", "lab-lost", str(path))
            self.lost_paths.add(str(path))

    def restore_path(self, path: str | Path) -> None:
        """Undo :meth:`lose_path`: the host sees ``path``'s real contents again."""
        if str(path) in self.lost_paths:
            self._mount_command("umount", str(path))
            self.lost_paths.discard(str(path))

    def hang(self) -> None:
        """libvirtd stops answering (SIGSTOP); the guests keep running."""
        for pid in self.pids("libvirtd"):
            os.kill(pid, signal.SIGSTOP)

    def cut_network(self) -> None:
        """Nothing reaches the host any more (not even a soft fence); the guests keep running."""
        self.reachable = False
        self.hang()

    def heal(self) -> None:
        self.reachable = True
        for pid in self.pids("libvirtd"):
            os.kill(pid, signal.SIGCONT)

    def restart_libvirtd(self) -> bool:
        """What a soft fence does over SSH: kill libvirtd; the host restarts it (the
        guests keep running and the new libvirtd finds them). False when unreachable."""
        if not self.reachable or not self.running:
            return False
        for pid in self.pids("libvirtd"):
            os.kill(pid, signal.SIGKILL)
        return True

    @property
    def bmc_port(self) -> int:
        return host_ports(self.port)["BMC"][0]


class Lab:
    """``n`` lab hosts named ``lab1``.. ``labN`` under a temporary directory; with
    ``bmc=True`` each has an IPMI BMC (``lab.bmcs``); ``transport`` is how hosts are
    reached (``tcp``, ``tls`` or ``ssh``: :mod:`flavors.virt.labtransport`)."""

    def __init__(self, n: int = 3, root: Path | None = None, base_port: int = BASE_PORT, bmc: bool = False,
                 transport: Transport = "tcp") -> None:
        check_ports(base_port, n)
        self._tmp = None if root is not None else tempfile.TemporaryDirectory(prefix="clustercore-lab-")
        self.root = root or Path(self._tmp.name)  # type: ignore[union-attr]
        # Shared storage: outside every host's bind mounts, so every host's libvirtd and
        # QEMU and this process see the same files at this same path (an NFS domain).
        self.shared = self.root / "shared"
        self.shared.mkdir(parents=True, exist_ok=True)
        self.access = LabAccess(self.root, transport)
        self.hosts = [LabHost(f"lab{i + 1}", i, self.root / f"lab{i + 1}", base_port + i, access=self.access)
                      for i in range(n)]
        self._want_bmc = bmc
        self.bmcs: LabBmcs | None = None
        self.networks = LabSwitches(base_port)  # guest networks: switches and NIC endpoints

    def switch(self, network: str) -> LabSwitch:
        """The L2 switch of guest network ``network``, started on first use, closed by
        :meth:`stop`; its ``address`` is the ``source`` of the network's udp NICs."""
        return self.networks.switch(network)

    def nic_endpoint(self) -> str:
        """A fresh ``127.0.0.1:PORT`` for a udp NIC's ``local`` end."""
        return self.networks.nic_endpoint()

    def libvirt_runs(self, paused: bool = True) -> dict[str, list[str]]:
        """The domains running on each host whose libvirtd answers (without paused ones when
        ``paused`` is False). A host powered off or cut while being asked runs nothing and is
        left out; any other failure to ask is raised."""
        import libvirt

        out = {}
        for host in self.hosts:
            if not host.running or not host.reachable:
                continue
            try:
                out[host.name] = host.active_domains(paused)
            except libvirt.libvirtError:
                if host.running and host.reachable:
                    raise
        return out

    def host(self, name: str) -> LabHost:
        return next(h for h in self.hosts if h.name == name)

    def soft_fence(self, host: Host) -> bool:
        """The lab's soft fence (``VirtFlavor(soft_fence=lab.soft_fence)``): restart the lab
        host's libvirtd, as SSH would on a real host; False when it is unreachable."""
        return any(h.restart_libvirtd() for h in self.hosts if h.uri == host.address)

    def start(self) -> Lab:
        atexit.register(self.stop)
        try:
            for host in self.hosts:
                host.power_on()
            if self._want_bmc:
                self.bmcs = LabBmcs(self.hosts)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        atexit.unregister(self.stop)
        if self.bmcs is not None:
            self.bmcs.close()
            self.bmcs = None
        for host in self.hosts:
            host.power_off()
        self.networks.close()
        if self._tmp is not None:
            with contextlib.suppress(OSError):
                self._tmp.cleanup()

    def __enter__(self) -> Lab:
        guard(self, True)
        try:
            return self.start()
        except BaseException:
            guard(self, False)
            raise

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        try:
            self.stop()
        finally:
            guard(self, False)

