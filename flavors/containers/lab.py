"""A lab of real podman hosts on one machine, for tests, demos and benchmarks.

Each :class:`PodmanHost` is one ``podman system service`` (the REST API at
``tcp://127.0.0.1:PORT``, podman-py's ``PodmanClient(base_url=host.uri)``) in its own mount
and PID namespace, with its own ``/run`` and ``/dev/shm`` (tmpfs: podman's lock file and
runtime state), its own ``containers.conf`` and ``storage.conf`` (storage, events log and
networks under its directory; runc, cgroupfs, host network, k8s-file logs, the ulimits
this sandbox allows) and a working CRIU first on the service's PATH
(:mod:`flavors.containers.criu`). The recipe is the one verified in the project's
CONTAINERS notes. Needs root and the Debian packages ``podman runc busybox-static``.

Faults, as on a real machine:

- ``power_cut(i)`` (or the BMC's power off): SIGKILL of the host's process group and of
  every process of its namespace; all its containers die at once, no other host's. After
  ``power_on(i)`` podman shows them ``created``/``exited``, not running.
- ``hang(i)``: the API service stops (SIGSTOP), nothing answers, the host's containers keep
  running; ``resume(i)`` continues it.
- With ``bmc=True`` every host has an IPMI BMC, the libvirt lab's
  (:class:`flavors.virt.labbmc.LabBmcs`): ``fence_ipmilan`` powers a podman host off and on
  exactly as it does a VM host.

Ports follow the libvirt lab's layout (:mod:`flavors.virt.labnet`): host k of the layout
(its API port - 16600) has the BMC port 6230 + k, so a podman lab and a libvirt lab never
share a port as long as their hosts' ports differ (the tests' podman labs use 17400..17449).
Every port is checked at construction and checked free before its host starts.

Every host loads the same image archive (:mod:`flavors.containers.image`): the image
``localhost/clustercore-busybox:1`` has the same id everywhere, so a checkpoint from one
host restores on another. Containers should all use ``lab.cgroup_parent`` (a restored
container keeps its source's); ``lab.shared`` is a directory every host sees at the same
path, for bind mounts (the cluster's shared storage). The lab is a context manager and
tears everything down on exit, on SIGTERM and on Ctrl-C (:mod:`flavors.virt.labsignals`).

    with PodmanLab(3, bmc=True) as lab:
        client = PodmanClient(base_url=lab.hosts[0].uri)
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType

import attrs

from flavors.containers.criu import Criu, cache_root, locate_criu
from flavors.containers.image import IMAGE, image_archive, load_image
from flavors.virt.labbmc import LabBmcs
from flavors.virt.labnet import LabError, check_free, check_ports, host_ports
from flavors.virt.labprocs import alive, tree
from flavors.virt.labsignals import guard

__all__ = ["BASE_PORT", "IMAGE", "ApiTimeout", "PodmanHost", "PodmanLab"]

BASE_PORT = 17400  # the tests' podman labs: 17400..17449 (libvirt labs' tests stay below 17300)
SCRIPT = """set -e
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /dev/shm
mkdir -p /run/lock /run/libpod /run/containers/storage
export CONTAINERS_CONF={dir}/containers.conf CONTAINERS_STORAGE_CONF={dir}/storage.conf
export PATH={path}
# the service restarted when it dies, as systemd does
while true; do podman system service --time=0 tcp:127.0.0.1:{port} >>{dir}/service.out 2>&1 || true; sleep 0.2; done
"""
CONTAINERS_CONF = """[containers]
netns = "host"
log_driver = "k8s-file"
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = "{dir}/events.log"
tmp_dir = "/run/libpod"
image_copy_tmp_dir = "{dir}/tmp"

[network]
network_config_dir = "{dir}/networks"
"""
STORAGE_CONF = """[storage]
driver = "overlay"
graphroot = "{dir}/storage"
runroot = "/run/containers/storage"
"""


class ApiTimeout(LabError):
    """``host``'s podman API did not answer at ``uri`` within ``timeout`` seconds."""

    def __init__(self, host: str, uri: str, timeout: float, detail: str) -> None:
        super().__init__(f"{host}: podman API not answering at {uri} after {timeout}s: {detail}")
        self.host, self.uri, self.timeout, self.detail = host, uri, timeout, detail


@attrs.define(eq=False)
class PodmanHost:
    name: str
    index: int
    root: Path
    port: int
    criu: Path | None = None  # the criu binary put first on the service's PATH
    process: subprocess.Popen[bytes] | None = None
    cgroup_parent: str = ""  # the lab's (``podman/cgroup-parent``)

    @property
    def uri(self) -> str:
        return f"tcp://127.0.0.1:{self.port}"

    @property
    def bmc_port(self) -> int:
        return host_ports(self.port)["BMC"][0]

    @property
    def labels(self) -> dict[str, str]:
        """The labels of this host's cluster record: ``podman/criu`` whether it can
        checkpoint, ``podman/cgroup-parent`` the lab's parent cgroup for its containers."""
        return {"podman/criu": "true" if self.criu is not None else "false",
                **({"podman/cgroup-parent": self.cgroup_parent} if self.cgroup_parent else {})}

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def prepare(self) -> None:
        for sub in ("storage", "tmp", "networks"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        (self.root / "containers.conf").write_text(CONTAINERS_CONF.format(dir=self.root))
        (self.root / "storage.conf").write_text(STORAGE_CONF.format(dir=self.root))

    def power_on(self, timeout: float = 30.0) -> None:
        """Boot the host and return once its API answers (:class:`ApiTimeout` otherwise)."""
        if self.running:
            return
        self.prepare()
        check_free(self.name, self.port)
        path = os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        if self.criu is not None:
            path = f"{self.criu.parent}:{path}"
        script = SCRIPT.format(dir=self.root, port=self.port, path=path)
        self.process = subprocess.Popen(
            ["unshare", "-m", "-p", "--fork", "--mount-proc", "--propagation", "private", "--kill-child=SIGKILL",
             "sh", "-c", script],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        self.wait_ready(timeout)

    def answers(self, timeout: float = 1.0) -> bool:
        """Whether the API answers its ping within ``timeout`` seconds."""
        return self._ping(timeout) is None

    def _ping(self, timeout: float) -> str | None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/_ping", timeout=timeout) as answer:
                body = answer.read().decode(errors="replace")
                return None if body.strip() == "OK" else f"ping answered {body[:100]!r}"
        except (OSError, urllib.error.URLError) as exc:
            return str(exc)

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        last = "never tried"
        while time.monotonic() < deadline:
            if not self.running:
                raise LabError(f"{self.name}: its namespace exited: {self.log_tail()}")
            problem = self._ping(1.0)
            if problem is None:
                return
            last = problem
            time.sleep(0.1)
        raise ApiTimeout(self.name, self.uri, timeout, f"{last}; {self.log_tail()}")

    def log_tail(self) -> str:
        out = self.root / "service.out"
        return out.read_text(errors="replace")[-2000:] if out.exists() else "(no log)"

    def power_off(self) -> None:
        """A power cut: every process of the host (the API service, conmon, the
        containers) is killed at once; returns when all are gone."""
        if self.process is None:
            return
        doomed = tree(self.process.pid)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)  # unshare --kill-child: the namespace dies
        for pid in doomed:  # and every process seen, those that left the session included
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=10)
        deadline = time.monotonic() + 10
        while any(alive(pid, seen) for pid, seen in doomed.items()) and time.monotonic() < deadline:
            time.sleep(0.01)
        self.process = None

    def processes(self) -> dict[int, tuple[str, str]]:
        """Every live process of this host: pid -> (name, start time)."""
        return {} if self.process is None else tree(self.process.pid)

    def service_pids(self) -> list[int]:
        """The host's ``podman system service`` processes."""
        found = []
        for pid, (name, _) in self.processes().items():
            with contextlib.suppress(OSError):
                if name == "podman" and b"service" in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0"):
                    found.append(pid)
        return found

    def hang(self, timeout: float = 5.0) -> None:
        """The API service stops answering (SIGSTOP); the containers keep running. Returns
        once every service process is stopped (state T); LabError when none is found."""
        deadline = time.monotonic() + timeout
        while True:
            pids = self.service_pids()
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGSTOP)
            if pids and all(_stopped(pid) for pid in pids):
                return
            if time.monotonic() > deadline:
                raise LabError(f"{self.name}: no podman service to hang (found {pids})")
            time.sleep(0.05)

    def resume(self) -> None:
        for pid in self.service_pids():
            os.kill(pid, signal.SIGCONT)


def _stopped(pid: int) -> bool:
    """Whether process ``pid`` is stopped by a signal (or gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] in ("T", "t")


class PodmanLab:
    """``n`` podman hosts named ``pod1``.. ``podN`` under a temporary directory (or ``root``),
    API ports from ``base_port``; with ``bmc=True`` each has an IPMI BMC (``lab.bmcs``).
    ``criu``: find (or build, about 40-70 s once, then cached) a working CRIU; ``lab.criu``
    says which, or why there is none. ``image``: load the lab image into every host."""

    def __init__(self, n: int = 3, root: Path | None = None, base_port: int = BASE_PORT, bmc: bool = False,
                 criu: bool = True, image: bool = True, cache_dir: Path | None = None) -> None:
        check_ports(base_port, n)
        self._tmp = None if root is not None else tempfile.TemporaryDirectory(prefix="clustercore-podlab-")
        self.root = root or Path(self._tmp.name)  # type: ignore[union-attr]
        self.shared = self.root / "shared"
        self.shared.mkdir(parents=True, exist_ok=True)
        self.cache_dir = cache_dir  # None: criu's default cache, images in ~/.cache/clustercore/images
        self.cgroup_parent = f"/clustercore-lab{base_port}"
        self.hosts = [PodmanHost(f"pod{i + 1}", i, self.root / f"pod{i + 1}", base_port + i,
                                 cgroup_parent=self.cgroup_parent) for i in range(n)]
        self._want = (bmc, criu, image)
        self.criu = Criu(None, "not looked for (criu=False)")
        self.image_id = ""
        self.bmcs: LabBmcs | None = None

    def host(self, name: str) -> PodmanHost:
        return next(h for h in self.hosts if h.name == name)

    def start(self) -> PodmanLab:
        bmc, criu, image = self._want
        atexit.register(self.stop)
        try:
            if criu:
                self.criu = locate_criu(self.cache_dir / "criu" if self.cache_dir else None)
            for host in self.hosts:
                host.criu = self.criu.path
                host.power_on()
            if image:
                self.load_image()
            if bmc:
                self.bmcs = LabBmcs(self.hosts)  # each port checked free, unless this process serves it
        except BaseException:
            self.stop()
            raise
        return self

    def load_image(self) -> str:
        """Load the lab image's one archive into every host; its id (the same on all)."""
        from podman import PodmanClient

        archive: Path | None = None
        ids = set()
        for host in self.hosts:
            with PodmanClient(base_url=host.uri, timeout=60) as client:
                archive = archive or image_archive(client, (self.cache_dir or cache_root()) / "images", host.name)
                ids.add(load_image(client, archive, host.name))
        if len(ids) > 1:
            raise LabError(f"the lab image has different ids on the hosts: {sorted(ids)}")
        self.image_id = ids.pop() if ids else ""
        return self.image_id

    def power_cut(self, i: int) -> None:
        self.hosts[i].power_off()

    def power_on(self, i: int, timeout: float = 30.0) -> None:
        self.hosts[i].power_on(timeout)

    def hang(self, i: int) -> None:
        self.hosts[i].hang()

    def resume(self, i: int) -> None:
        self.hosts[i].resume()

    def stop(self) -> None:
        atexit.unregister(self.stop)
        if self.bmcs is not None:
            self.bmcs.close()
            self.bmcs = None
        for host in self.hosts:
            host.power_off()
        remove_cgroups(self.cgroup_parent)
        if self._tmp is not None:
            with contextlib.suppress(OSError):
                self._tmp.cleanup()

    def __enter__(self) -> PodmanLab:
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


def remove_cgroups(parent: str) -> None:
    """Remove the (empty, once the hosts are off) cgroups under ``parent`` in every
    hierarchy: a power cut leaves its containers' cgroups behind."""
    for hierarchy in Path("/sys/fs/cgroup").iterdir():
        top = hierarchy / parent.strip("/")
        if not top.is_dir():
            continue
        for directory in sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
            with contextlib.suppress(OSError):
                directory.rmdir()
        with contextlib.suppress(OSError):
            top.rmdir()
