"""Containers through each host's podman REST API (podman-py): start, graceful stop then
kill, inspect, and ``migrate`` by CRIU checkpoint/restore.

A move by checkpoint: the source checkpoints the container with ``export`` (its memory,
files and state in one archive; ``keep`` leaves the checkpoint on the source) and stops;
the target restores it with ``import``; only once the target runs it is the source's
stopped copy removed. If the restore fails the source restores its own kept checkpoint,
so the container runs on its source again (its memory intact), once the target is known
to hold no copy: the target answered and its copy is removed, or it refused the
connection (a dead host: the restore never reached it). A target that took the restore
and then stopped answering may run the container, so the source keeps its checkpoint,
stopped, and the error says so. Never two copies running: the source is stopped before
the target starts. A container whose spec says ``move:
restart`` is stopped on the source and started fresh on the target instead (its memory
is lost). Where CRIU is missing on either host a ``checkpoint``
container is not moved (:class:`NotCheckpointable`), and stays where it runs.

Each podman call has a timeout (``call_timeout``): a hung host's API fails the call with
:class:`ContainerError` instead of holding the caller.
"""

from __future__ import annotations

import logging
import tempfile
import threading
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from podman import PodmanClient
from podman.domain.containers import Container
from podman.errors import APIError, NotFound, PodmanError
from requests import RequestException
from requests.exceptions import ConnectionError as ConnectFailed
from urllib3.exceptions import NewConnectionError

from clustercore.driver import WorkloadState
from clustercore.model import Host, Workload
from flavors.containers.spec import KIND, ContainerSpec

log = logging.getLogger(__name__)

URI_LABEL = "podman/uri"
"""A host label naming its podman API, for hosts whose address is another flavor's (a
libvirt URI on a host that runs both VMs and containers)."""
CGROUP_LABEL = "podman/cgroup-parent"
SCHEMES = ("tcp", "unix", "http+unix")
LABEL = "clustercore/workload"
CHUNK = 1 << 20


class ContainerError(Exception):
    """A podman call about one container on one host failed; ``op`` names the call."""

    def __init__(self, op: str, name: str, host: str, detail: str) -> None:
        super().__init__(f"{op} of container {name} on {host}: {detail}")
        self.op, self.name, self.host, self.detail = op, name, host, detail


class NotCheckpointable(ContainerError):
    """A ``move: checkpoint`` container cannot be moved between these hosts (no CRIU)."""


def podman_uri(host: Host) -> str | None:
    """The podman API of ``host``: its ``podman/uri`` label, or its address when that is a
    podman URI (``tcp://``, ``unix://``); None for another flavor's host."""
    label = host.labels.get(URI_LABEL)
    if label:
        return label
    return host.address if urlsplit(host.address).scheme in SCHEMES else None


def container_spec(workload: Workload) -> ContainerSpec:
    """The spec a ``container`` workload carries (errors name ``spec.<field>``)."""
    return ContainerSpec.from_dict(workload.spec.thaw(), "spec")


def container_workload(spec: ContainerSpec, *, ha: bool = False, priority: int = 0,
                       labels: dict[str, str] | None = None) -> Workload:
    """The workload of ``spec``: flavor ``container``, requests from the spec."""
    return Workload(spec.name, KIND, requests=spec.requests(), ha=ha, priority=priority, labels=labels or {},
                    spec=spec.to_dict())


class PodmanDriver:
    """``cgroup_parent``: one parent cgroup for every container of the cluster (a restored
    container keeps its source's), unless the host's ``podman/cgroup-parent`` label names
    another (a manager process configures no driver: the hosts' records do); ``criu``:
    whether a host can checkpoint (default: its ``podman/criu`` label, which the lab and the
    host's agent set from ``criu check``)."""

    flavor = KIND
    live_migration = True

    def __init__(self, call_timeout: float = 30.0, cgroup_parent: str | None = "/clustercore",
                 criu: Callable[[Host], bool] | None = None,
                 ulimits: tuple[tuple[str, int], ...] = (("nofile", 20000), ("nproc", 32768))) -> None:
        self.call_timeout = call_timeout
        self.cgroup_parent = cgroup_parent
        self.criu = criu or (lambda host: host.labels.get("podman/criu", "") == "true")
        self.ulimits = ulimits
        self._clients: dict[str, PodmanClient] = {}
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ hosts

    def client(self, host: Host) -> PodmanClient:
        uri = podman_uri(host)
        if uri is None:
            raise ContainerError("connect", "-", host.name, f"no podman API (address {host.address!r}, "
                                 f"no {URI_LABEL} label)")
        with self._lock:
            found = self._clients.get(uri)
            if found is None:
                found = self._clients[uri] = PodmanClient(base_url=uri, timeout=self.call_timeout)
            return found

    def info(self, host: Host) -> dict[str, Any]:
        try:
            found: dict[str, Any] = self.client(host).info()  # type: ignore[no-untyped-call]
        except (PodmanError, RequestException) as exc:
            raise ContainerError("info", "-", host.name, str(exc)) from exc
        return found

    def container_stats(self, host: Host) -> list[dict[str, Any]]:
        """Every container's stats on ``host`` (libpod's ``/containers/stats``, not streamed)."""
        try:
            answer = self.client(host).api.get("/containers/stats", params={"stream": False})
            answer.raise_for_status()
            found: list[dict[str, Any]] = answer.json().get("Stats") or []
        except (PodmanError, RequestException, ValueError) as exc:
            raise ContainerError("stats", "-", host.name, str(exc)) from exc
        return found

    def _find(self, name: str, host: Host) -> Container | None:
        """The container named ``name`` on ``host``. podman looks a name up as an id prefix
        too when no container has that name, so ``c5`` finds a container whose id begins
        with c5 once ``c5`` itself has moved away: such a stranger is no find."""
        try:
            found = self.client(host).containers.get(name)
        except NotFound:
            return None
        except (PodmanError, RequestException) as exc:
            raise ContainerError("inspect", name, host.name, str(exc)) from exc
        return found if str(found.name).lstrip("/") == name else None

    # ------------------------------------------------------------------ the driver

    def start(self, workload: Workload, host: Host) -> None:
        spec = container_spec(workload)
        found = self._find(spec.name, host)
        if found is not None and found.status == "running":
            return
        try:
            if found is not None:  # a stopped copy (after a power cut podman shows it Created): made anew
                found.remove(force=True)
            made = self.client(host).containers.create(spec.image, list(spec.command) or None,
                                                       **self._create(spec, host))
            made.start()
            made.reload()
        except (PodmanError, RequestException) as exc:
            raise ContainerError("start", spec.name, host.name, str(exc)) from exc
        if made.status != "running":
            raise ContainerError("start", spec.name, host.name, f"{made.status} after start: {_tail(made)}")

    def _create(self, spec: ContainerSpec, host: Host) -> dict[str, Any]:
        args: dict[str, Any] = {
            "name": spec.name, "environment": spec.environment(), "mem_limit": f"{spec.memory}m",
            "network_mode": spec.network, "labels": {LABEL: spec.name}, "stop_signal": 15,
            "ulimits": [{"Name": n, "Soft": v, "Hard": v} for n, v in self.ulimits]}
        if spec.cpus:
            args["cpu_period"], args["cpu_quota"] = 100_000, round(spec.cpus * 100_000)
        if spec.pids:
            args["pids_limit"] = spec.pids
        if spec.mounts:
            args["mounts"] = [{"type": "bind", "source": m.source, "target": m.target, "read_only": m.read_only}
                              for m in spec.mounts]
        parent = host.labels.get(CGROUP_LABEL, self.cgroup_parent)
        if parent:
            args["cgroup_parent"] = parent
        return args

    def stop(self, workload: Workload, host: Host, force: bool = False) -> None:
        spec = container_spec(workload)
        found = self._find(spec.name, host)
        if found is None:
            return
        try:
            if found.status in ("running", "paused"):
                if force:
                    found.kill("SIGKILL")
                else:
                    found.stop(timeout=spec.stop_timeout)  # SIGTERM, SIGKILL after the timeout
            found.remove(force=True)
        except NotFound:
            return  # gone meanwhile: stopped is what was asked
        except (PodmanError, RequestException) as exc:
            raise ContainerError("stop", spec.name, host.name, str(exc)) from exc

    def inspect(self, workload: Workload, host: Host) -> WorkloadState:
        found = self._find(workload.name, host)
        if found is None:
            return WorkloadState.ABSENT
        return WorkloadState.RUNNING if found.status in ("running", "paused") else WorkloadState.STOPPED

    def migrate(self, workload: Workload, source: Host, target: Host) -> None:
        spec = container_spec(workload)
        if spec.move == "restart":
            self.stop(workload, source)
            self.start(workload, target)
            return
        for host in (source, target):
            if not self.criu(host):
                raise NotCheckpointable("migrate", spec.name, host.name, "CRIU is not available there")
        left = self._find(spec.name, target)
        if left is not None:  # a stopped copy its host kept through a power cut: the restore makes it anew
            if left.status == "running":
                raise ContainerError("migrate", spec.name, target.name, "a container of that name runs there")
            self._remove(spec.name, target)
        with tempfile.SpooledTemporaryFile(max_size=64 * CHUNK) as archive:
            self._checkpoint(spec.name, source, archive)
            try:
                archive.seek(0)
                self._restore(spec.name, target, archive)
            except ContainerError as exc:
                self._undo(spec.name, source, target, refused=_refused(exc.__cause__))
                raise ContainerError("migrate", spec.name, target.name,
                                     f"restore failed ({exc.detail}); running on {source.name} again") from exc
        self._remove(spec.name, source)

    def _checkpoint(self, name: str, host: Host, archive: Any) -> None:
        try:
            answer = self.client(host).api.post(f"/containers/{name}/checkpoint",
                                                params={"export": True, "keep": True}, stream=True)
            answer.raise_for_status()
            for chunk in answer.iter_content(CHUNK):
                archive.write(chunk)
        except (PodmanError, RequestException) as exc:
            raise ContainerError("checkpoint", name, host.name, _detail(exc)) from exc
        if self.inspect_state(name, host) == "running":
            raise ContainerError("checkpoint", name, host.name, "still running after its checkpoint")

    def _restore(self, name: str, host: Host, archive: Any) -> None:
        try:
            answer = self.client(host).api.post("/containers/import/restore", params={"import": True},
                                                data=archive, headers={"Content-Type": "application/x-tar"})
            answer.raise_for_status()
        except (PodmanError, RequestException) as exc:
            raise ContainerError("restore", name, host.name, _detail(exc)) from exc
        if self.inspect_state(name, host) != "running":
            raise ContainerError("restore", name, host.name, "not running after the restore")

    def _undo(self, name: str, source: Host, target: Host, refused: bool) -> None:
        """After a failed restore: no copy on the target (none when it ``refused`` the
        connection; else removed, or ContainerError with the source left stopped), the
        source's own checkpoint restored."""
        if refused:
            log.warning("move of %s: %s refused the restore; restoring on %s", name, target.name, source.name)
        else:
            try:
                self._remove(name, target)
            except ContainerError as exc:
                raise ContainerError("restore", name, source.name, f"not restored on the source: {target.name} "
                                     f"may run it and does not answer ({exc.detail})") from exc
        self._restore_kept(name, source)

    def _restore_kept(self, name: str, host: Host) -> None:
        """Restore on ``host`` the checkpoint its stopped container kept (``keep``)."""
        try:
            self.client(host).api.post(f"/containers/{name}/restore", params={"keep": True}).raise_for_status()
        except (PodmanError, RequestException) as exc:
            raise ContainerError("restore", name, host.name, f"back on the source: {_detail(exc)}") from exc

    def settle(self, workload: Workload, source: Host, target: Host) -> None:
        """End a move whose manager died mid-way (the core's SettlingDriver): running on
        the target, the source's stopped copy is removed; else a copy on the target that
        does not run (a restore cut short) is removed, and a container stopped on the
        source (checkpointed, the archive lost with its manager) runs there again: its kept
        checkpoint restored (its memory intact), or, moving by restart, started anew."""
        spec = container_spec(workload)
        on_source, on_target = self.inspect_state(spec.name, source), self.inspect_state(spec.name, target)
        if on_target == "running":
            if on_source != "running":
                self._remove(spec.name, source)
            return
        if on_target != "absent":
            self._remove(spec.name, target)
        if on_source in ("running", "absent"):
            return
        log.warning("move of %s from %s to %s cut short (%s there): running it on %s again", spec.name,
                    source.name, target.name, on_source, source.name)
        if spec.move == "restart":
            self.start(workload, source)
        else:
            self._restore_kept(spec.name, source)

    def _remove(self, name: str, host: Host) -> None:
        found = self._find(name, host)
        if found is None:
            return
        try:
            found.remove(force=True)
        except NotFound:
            return
        except (PodmanError, RequestException) as exc:
            raise ContainerError("remove", name, host.name, str(exc)) from exc

    def inspect_state(self, name: str, host: Host) -> str:
        """podman's own word for the container's state on ``host`` (``absent`` when none)."""
        found = self._find(name, host)
        return "absent" if found is None else str(found.status)


def _refused(exc: BaseException | None) -> bool:
    """Whether a podman call failed at connecting (nothing listening: the request never
    reached the service), through podman-py's wrapping (APIError from requests' error)."""
    while exc is not None:
        if isinstance(exc, ConnectFailed) and exc.args:
            return isinstance(getattr(exc.args[0], "reason", None), NewConnectionError)
        exc = exc.__cause__
    return False


def _detail(exc: Exception) -> str:
    if isinstance(exc, APIError) and exc.explanation:
        return str(exc.explanation)
    response = getattr(exc, "response", None)
    if response is not None:
        try:
            return f"{response.status_code}: {response.json().get('message', response.text)}"
        except ValueError:
            return f"{response.status_code}: {response.text[:300]}"
    return str(exc)


def _tail(container: Container) -> str:
    try:
        logs = container.logs(tail=5)
        text = b"".join(logs if not isinstance(logs, bytes) else [logs]).decode(errors="replace")
    except (PodmanError, RequestException):
        return "no logs"
    return text.strip()[-500:] or "no output"
