"""The Redfish BMCs of a lab: one sushy-tools emulator per lab host on
``https://127.0.0.1:<Redfish port>`` (:func:`flavors.virt.labnet.host_ports`), with a server
certificate from a :class:`clustercore.certs.LabCA` and HTTP basic authentication, serving
one ComputerSystem: the lab host. Its ``PowerState`` is the host's, and its
``ComputerSystem.Reset`` actions power the host for real (ForceOff is the host's power cut),
so ``fence_redfish`` and the built-in ``redfish`` agent (sushy) fence lab hosts through real
https with the CA verified (device option ``ca_file``, see docs/fencing.md).

It is sushy-tools' own emulator (its Flask app in ``sushy_tools.emulator.main``, its routes,
templates and basic-auth middleware over an htpasswd file, the file
``SUSHY_EMULATOR_AUTH_FILE`` would name) with a systems driver of ours,
:class:`LabSystemsDriver` (a subclass of sushy-tools' ``AbstractSystemsDriver``). All
emulators run in this process, each served by werkzeug's threaded server with real TLS in a
thread of its own: the driver calls ``power_off()``/``power_on()`` on the lab host objects,
which live here. sushy-tools' app is a module-level singleton whose routes read
``app.systems``; its class is swapped once for a subclass whose resources (systems, managers,
chassis...) are those of the emulator answering the request (a context variable each server
sets), so every server has drivers of its own. A reset answers as a real BMC does: ForceOff
cuts the power before answering (the cut takes well under a second), On starts the boot and
answers at once (the client polls ``PowerState``, as ``fence_redfish`` does).

Errors: a port already held raises :class:`flavors.virt.labnet.PortInUse`.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import logging
import socket
import ssl
import tempfile
import threading
import uuid
from collections.abc import Iterable, Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol

from flavors.virt.labbmc import PowerControlled
from flavors.virt.labnet import PortInUse, host_ports

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment
    from werkzeug.serving import BaseWSGIServer

    from clustercore.certs import LabCA

__all__ = ["LabRedfish", "RedfishHost", "redfish_port"]
log = logging.getLogger(__name__)

#: sushy-tools' resources, each a property of its app; ours are per emulator.
RESOURCES = ("systems", "managers", "chassis", "indicators", "vmedia", "storage", "drives", "volumes")
_serving: contextvars.ContextVar[_Emulator] = contextvars.ContextVar("lab_redfish_emulator")


class RedfishHost(PowerControlled, Protocol):
    """A lab host with a Redfish BMC: its TCP port gives the BMC's (``host_ports``)."""

    @property
    def port(self) -> int: ...


def redfish_port(host: RedfishHost) -> int:
    return host_ports(host.port)["Redfish"][0]


class _LazyHandshake(ssl.SSLContext):
    """TLS whose handshake happens on a connection's first read, in the thread that serves
    it: werkzeug accepts in one loop, and a client that never speaks would stall it there."""

    def wrap_socket(self, sock: socket.socket, *args: Any, **kwargs: Any) -> ssl.SSLSocket:
        kwargs["do_handshake_on_connect"] = False
        return super().wrap_socket(sock, *args, **kwargs)


@functools.cache
def _driver_class() -> type[Any]:
    """:class:`LabSystemsDriver`, built on first use (sushy-tools is imported only for Redfish)."""
    from sushy_tools import error  # type: ignore[import-untyped]
    from sushy_tools.emulator.resources.systems.base import AbstractSystemsDriver  # type: ignore[import-untyped]

    class LabSystemsDriver(AbstractSystemsDriver):  # type: ignore[misc]
        """The one system of a lab host's BMC: identity its uuid or its host's name."""

        def __init__(self, host: RedfishHost, config: dict[str, Any], logger: logging.Logger) -> None:
            self.host, self._config, self._logger = host, config, logger
            self.system_uuid = str(uuid.uuid5(uuid.NAMESPACE_URL, f"clustercore-lab:{host.name}:{host.port}"))
            self._boot: threading.Thread | None = None
            self.offs = 0  # power cuts obeyed

        @property
        def driver(self) -> str:
            return "<clustercore-lab-host>"

        @property
        def systems(self) -> list[str]:
            return [self.system_uuid]

        def uuid(self, identity: str) -> str:
            if identity not in (self.system_uuid, self.host.name):
                raise error.NotFound(f"System {identity} not found")
            return self.system_uuid

        def name(self, identity: str) -> str:
            self.uuid(identity)
            return self.host.name

        def get_power_state(self, identity: str) -> str:
            self.uuid(identity)
            return "On" if self.host.running else "Off"

        def set_power_state(self, identity: str, state: str) -> None:
            self.uuid(identity)
            if state == "PushPowerButton":
                state = "ForceOff" if self.host.running else "On"
            if state in ("On", "ForceOn"):
                self.power_on()
            elif state in ("ForceOff", "GracefulShutdown"):
                self.power_off()
            elif state in ("ForceRestart", "GracefulRestart", "PowerCycle"):
                self.power_off()
                self.power_on()
            else:
                raise error.NotSupportedError(f"Power state {state} is not supported")

        def power_off(self) -> None:
            self.offs += 1
            self.host.power_off()  # a power cut: returns once every process of the host is gone

        def power_on(self) -> None:
            """Boot in the background, as a real BMC answers before the host is up."""
            if self.host.running or (self._boot is not None and self._boot.is_alive()):
                return
            self._boot = threading.Thread(target=self._power_on, name=f"redfish-boot-{self.host.name}", daemon=True)
            self._boot.start()

        def _power_on(self) -> None:
            try:
                self.host.power_on()
            except Exception:
                self._logger.exception("%s: power on through Redfish failed", self.host.name)

        def get_boot_device(self, identity: str) -> str:
            self.uuid(identity)
            return "Hdd"

        def set_boot_device(self, identity: str, boot_source: str) -> None:
            raise error.NotSupportedError("a lab host boots its own way")

    return LabSystemsDriver


@functools.cache
def _emulator_app() -> Any:
    """sushy-tools' app, its resources made per emulator (once per process)."""
    from sushy_tools.emulator import main  # type: ignore[import-untyped]

    def resource(name: str, app: Any) -> Any:
        return _serving.get().resource(name)

    lab_class = type("LabApplication", (main.Application,),
                     {name: property(functools.partial(resource, name)) for name in RESOURCES})
    main.app.__class__ = lab_class
    return main.app


class _Emulator:
    """One lab host's Redfish BMC: sushy-tools' drivers of its own and its https server."""

    def __init__(self, host: RedfishHost, ca: LabCA, auth_file: Path, state: Path) -> None:
        from sushy_tools.emulator.main import RedfishAuthMiddleware  # type: ignore[import-untyped]
        from werkzeug.serving import WSGIRequestHandler, make_server

        class Quiet(WSGIRequestHandler):
            def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
                log.debug("%s: %s %s", host.name, self.requestline, code)

        self.host, self.port = host, redfish_port(host)
        app = _emulator_app()
        self.config = {"SUSHY_EMULATOR_STATE_DIR": str(state)}
        self.systems = _driver_class()(host, self.config, app.logger)
        self._resources: dict[str, Any] = {"systems": self.systems}
        self._lock = threading.RLock()
        self._auth = RedfishAuthMiddleware(app, str(auth_file))
        cert, key = ca.issue(f"redfish-{host.name}", ["127.0.0.1"], server=True)
        context = _LazyHandshake(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        listener = socket.socket()  # bound here: werkzeug's own bind exits the process when it fails
        with contextlib.closing(listener):
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                listener.bind(("127.0.0.1", self.port))
            except OSError as exc:
                raise PortInUse(f"{host.name} Redfish BMC", self.port, exc) from exc
            listener.listen(64)
            self.server: BaseWSGIServer = make_server("127.0.0.1", self.port, self._wsgi, threaded=True,
                                                      request_handler=Quiet, ssl_context=context,
                                                      fd=listener.fileno())  # it serves a duplicate
        self._thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.2},
                                        name=f"redfish-{host.name}", daemon=True)
        self._thread.start()

    def _wsgi(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        token = _serving.set(self)
        try:
            return self._auth(environ, start_response)  # type: ignore[no-any-return]
        finally:
            _serving.reset(token)

    def resource(self, name: str) -> Any:
        """sushy-tools' resource ``name`` of this emulator, made on first use."""
        with self._lock:
            if name not in self._resources:
                self._resources[name] = self._make(name)
            return self._resources[name]

    def _make(self, name: str) -> Any:
        from sushy_tools.emulator.resources import (  # type: ignore[import-untyped]
            chassis,
            drives,
            indicators,
            managers,
            storage,
            vmedia,
            volumes,
        )

        logger = _emulator_app().logger
        if name == "managers":
            return managers.FakeDriver(self.config, logger, self.systems, self.resource("chassis"))
        static = {"chassis": chassis, "indicators": indicators, "vmedia": vmedia, "storage": storage,
                  "drives": drives, "volumes": volumes}[name]
        return static.StaticDriver(self.config, logger)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(5)


class LabRedfish:
    """The Redfish BMCs of a lab's ``hosts`` (a context manager; :meth:`close` stops them),
    each answering ``username``/``password`` (basic auth) over https with a certificate that
    ``ca`` issued for 127.0.0.1. On failure nothing is left serving."""

    def __init__(self, hosts: Sequence[RedfishHost], ca: LabCA, username: str = "admin", password: str = "") -> None:
        import bcrypt

        self.ca, self.username = ca, username
        self.password = password or uuid.uuid4().hex[:16]
        self._tmp = tempfile.TemporaryDirectory(prefix="clustercore-redfish-")
        root = Path(self._tmp.name)
        auth_file = root / "htpasswd"  # what SUSHY_EMULATOR_AUTH_FILE names; cost 4: a lab, many requests
        auth_file.touch(mode=0o600)
        digest = bcrypt.hashpw(self.password.encode(), bcrypt.gensalt(rounds=4)).decode()
        auth_file.write_text(f"{username}:{digest}\n")
        self.emulators: dict[str, _Emulator] = {}
        try:
            for host in hosts:
                state = root / host.name
                state.mkdir()
                self.emulators[host.name] = _Emulator(host, ca, auth_file, state)
        except BaseException:
            self.close()
            raise

    def offs(self, host: str) -> int:
        """How many power cuts ``host``'s BMC has obeyed."""
        return int(self.emulators[host].systems.offs)

    def url(self, host: RedfishHost) -> str:
        return f"https://127.0.0.1:{redfish_port(host)}/redfish/v1"

    def device(self, host: RedfishHost, agent: str = "fence_redfish", password: str | None = None,
               ca_file: Path | None = None) -> dict[str, Any]:
        """The fence device of ``host`` (a ``Host.fence_devices`` entry) for ``fence_redfish``
        or ``redfish``, verifying the server against ``ca_file`` (default: the lab's CA)."""
        return {"agent": agent, "address": "127.0.0.1", "port": redfish_port(host), "username": self.username,
                "password": self.password if password is None else password,
                "options": {"ca_file": str(ca_file or self.ca.cert)}}

    def close(self) -> None:
        for emulator in self.emulators.values():
            with contextlib.suppress(Exception):
                emulator.close()
        self.emulators.clear()
        with contextlib.suppress(OSError):
            self._tmp.cleanup()

    def __enter__(self) -> LabRedfish:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

