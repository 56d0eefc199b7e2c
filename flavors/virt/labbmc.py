"""The IPMI BMCs of a lab: one pyghmi BMC server per lab host on 127.0.0.1:``bmc_port``
(UDP, lanplus), whose power off is the host's power cut, so real fence agents
(``fence_ipmilan``, ``ipmitool``, pyghmi) fence lab hosts for real. A BMC powers any
:class:`PowerControlled` host: a libvirt lab host (:mod:`flavors.virt.lab`) or a podman
lab host (:mod:`flavors.containers.lab`) alike. pyghmi is imported only when a lab has BMCs.
"""

from __future__ import annotations

import functools
import threading
import uuid
from collections.abc import Sequence
from typing import Any, Protocol

from flavors.virt.labnet import check_free_udp

__all__ = ["LabBmcs", "PowerControlled"]


class PowerControlled(Protocol):
    """What a lab BMC powers: a host with a name, a BMC port, and a power switch
    (``power_off`` is a power cut that returns once every process of the host is gone;
    ``power_on`` boots it and returns once it answers)."""

    @property
    def name(self) -> str: ...

    @property
    def bmc_port(self) -> int: ...

    @property
    def running(self) -> bool: ...

    def power_on(self) -> None: ...

    def power_off(self) -> None: ...


def _bmc_class() -> type[Any]:
    """:class:`LabBmc`'s base, built on first use (pyghmi is imported only for BMCs)."""
    from pyghmi.ipmi import bmc
    from pyghmi.ipmi.private import serversession

    class Sha1Session(serversession.ServerSession):  # type: ignore[misc]
        """pyghmi's server answers every open-session request with cipher suite 3
        (HMAC-SHA1) even when the client proposed SHA-256, which pyghmi's own client
        then fails to verify. A real BMC refuses what it does not support (status 0x11,
        invalid authentication algorithm) and the client retries with SHA-1: do that."""

        def create_open_session_response(self, request: bytearray) -> bytearray:
            if len(request) > 12 and request[12] not in (0, 1):
                self.clientsessionid = request[4:8]
                return bytearray([request[0], 0x11, 0, 0]) + request[4:8]
            return bytearray(super().create_open_session_response(request))

    class Base(bmc.Bmc):  # type: ignore[misc]
        def sessionless_data(self, data: bytes, sockaddr: Any) -> None:
            if getattr(self, "silent", False):
                return  # a BMC that never answers
            raw = bytearray(data)
            if len(raw) >= 22 and raw[0] == 6 and raw[2:4] == b"\xff\x07" and raw[4] == 6 and raw[5] == 16:
                Sha1Session(self.authdata, self.kg, sockaddr, self.serversocket, raw[16:], self.uuid, bmc=self)
                return
            super().sessionless_data(data, sockaddr)

    return Base


@functools.cache
def _lab_bmc_class() -> type[Any]:
    """The BMC of one lab host (built on first use, as :func:`_bmc_class`)."""

    class LabBmc(_bmc_class()):  # type: ignore[misc]
        def __init__(self, host: PowerControlled, authdata: dict[str, str]) -> None:
            super().__init__(authdata, port=host.bmc_port, address="127.0.0.1")
            self.serve(host, authdata)

        def serve(self, host: PowerControlled, authdata: dict[str, str]) -> None:
            self.host, self.authdata = host, authdata
            self.silent = False
            self.offs = 0  # power-off commands obeyed (a fencing must not cut twice)

        def get_power_state(self) -> str:
            return "on" if self.host.running else "off"

        def power_off(self) -> None:
            self.offs += 1
            self.host.power_off()

        def power_on(self) -> None:
            threading.Thread(target=self.host.power_on, daemon=True).start()

        def power_reset(self) -> None:
            self.host.power_off()
            self.power_on()

        def power_cycle(self) -> None:
            self.power_reset()

        def power_shutdown(self) -> None:
            self.host.power_off()

    return LabBmc


_SERVED: dict[int, Any] = {}  # UDP port -> its BMC: pyghmi never lets a server socket go (see close)


class LabBmcs:
    """The IPMI BMCs of a lab: one pyghmi BMC server per host on 127.0.0.1:``bmc_port``
    (UDP, lanplus), all served by one thread. Power off is the host's power cut; power on
    boots it (in the background, as a real BMC answers before the host is up). A port
    whose BMC an earlier lab of this process closed gets that BMC back, serving the new
    host (a fresh lab per test on the same ports)."""

    def __init__(self, hosts: Sequence[PowerControlled], username: str = "admin", password: str = "") -> None:
        from pyghmi.ipmi.private import session

        self.username = username
        self.password = password or uuid.uuid4().hex[:16]
        self._session = session
        self._stop = threading.Event()
        self.bmcs: dict[str, Any] = {}
        for host in hosts:
            authdata = {username: self.password}
            found = _SERVED.get(host.bmc_port)
            if found is None:
                check_free_udp(f"{host.name} BMC", host.bmc_port)
                found = _SERVED[host.bmc_port] = _lab_bmc_class()(host, authdata)
            else:
                assert found.silent, f"BMC port {host.bmc_port} serves a lab that is still open"
                found.serve(host, authdata)
            self.bmcs[host.name] = found
        self._thread = threading.Thread(target=self._serve, name="lab-bmcs", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            self._session.Session.wait_for_rsp(0.2)

    def silence(self, host: str, silent: bool = True) -> None:
        """Make a host's BMC stop answering (as an unplugged BMC does)."""
        self.bmcs[host].silent = silent

    def device(self, host: PowerControlled, agent: str = "fence_ipmilan",
               password: str | None = None) -> dict[str, Any]:
        """The fence device of ``host`` (a ``Host.fence_devices`` entry)."""
        return {"agent": agent, "address": "127.0.0.1", "port": host.bmc_port, "username": self.username,
                "password": self.password if password is None else password,
                "options": {"lanplus": "1"} if agent == "fence_ipmilan" else {}}

    def close(self) -> None:
        """Stop serving. The BMCs fall silent but their sockets stay registered with
        pyghmi's process-wide I/O loop: unregistering and closing them left a later lab's
        BMCs in the same process unanswered."""
        for bmc in self.bmcs.values():
            bmc.silent = True
        self._stop.set()
        self._thread.join(5)
