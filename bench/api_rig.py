"""The HTTP API benchmark's rig (``bench/api.py``): a manager serving its API over TLS
in this process with hosts Up and heartbeating, and a second process of httpx clients
driven through a pipe; :class:`Tally` is what a load run saw."""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import ssl
import threading
import time
from collections import Counter
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from clustercore import HostReport, HostState, Plugins, auth
from clustercore.errors import ClusterError
from clustercore.manager import Manager
from clustercore.store.memory import MemoryStore
from clustercore.testing import FakeFlavor

INTERVAL = 0.1  # seconds between the manager's passes
DONE = ("Succeeded", "Failed", "Cancelled")
CHANGED = 100  # host transitions before each read where hosts change
S = HostState


def workload_doc(name: str) -> dict[str, Any]:
    return {"name": name, "flavor": "sim", "requests": {"cpu": 1, "memory": 64}}


class Tally:
    """What a load run saw: each call's (end, latency) by kind, errors, operations."""

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.calls: dict[str, list[tuple[float, float]]] = {"create": [], "delete": [], "wait": []}
        self.errors: list[str] = []
        self.requested = self.succeeded = 0
        self.lock = threading.Lock()

    def call(self, kind: str, t0: float) -> None:
        t1 = time.perf_counter()
        with self.lock:
            self.calls[kind].append((t1 - self.started, t1 - t0))

    def error(self, what: str) -> None:
        with self.lock:
            self.errors.append(what)

    def ended(self, op: dict[str, Any]) -> None:
        with self.lock:
            self.requested += 1
            if op["state"] == "Succeeded":
                self.succeeded += 1
            else:
                self.errors.append(f"operation {op['kind']} {op['target']}: {op['state']} {op['error']}")

    def result(self) -> dict[str, Any]:
        return {"calls": self.calls, "errors": self.errors, "requested": self.requested,
                "succeeded": self.succeeded, "elapsed": time.perf_counter() - self.started}



# ---------------------------------------------------------------------------- the server


class Server:
    """A manager with hosts Up, heartbeating, passing in a thread, its API served over TLS."""

    def __init__(self, state_dir: Path) -> None:
        from clustercore.api import ApiServer, create_app

        self.store = MemoryStore()
        self.manager = Manager(self.store, "bench", plugins=Plugins([FakeFlavor("sim")], entry_points=False))
        self.operator = self.manager.operator  # what the API writes through; hosts' agents beat through it too
        self.names: list[str] = []
        self.stop = threading.Event()
        self.token = auth.create_token(self.store, "bench", "operator")
        self.api = ApiServer(create_app(self.manager), "127.0.0.1:0", state_dir=state_dir)
        self._cursor = 0
        self._threads = [threading.Thread(target=self.manager.run, args=(INTERVAL, self.stop), daemon=True),
                         threading.Thread(target=self._beat, daemon=True)]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()
        self.api.start()

    def close(self) -> None:
        self.api.stop()
        self.stop.set()
        for thread in self._threads:
            thread.join(10)

    def _beat(self) -> None:
        report, i = HostReport(), 0
        while not self.stop.wait(1.0):
            for name in self.names[i % 10::10]:
                self.operator.heartbeat(name, report)
            i += 1

    def grow(self, hosts: int) -> None:
        """Register hosts up to ``hosts``, a thousand at a time, each batch beating until Up."""
        while len(self.names) < hosts:
            batch = [f"h{i:05d}" for i in range(len(self.names), min(hosts, len(self.names) + 1000))]
            for name in batch:
                self.operator.register_host({"name": name, "capacity": {"cpu": 32, "memory": 262144}})
            self.until_up(batch)
            self.names = self.names + batch

    def until_up(self, names: list[str], timeout: float = 60.0) -> None:
        """Beat ``names`` until they are Up, bringing those in (or going into) maintenance back."""
        deadline, wanted, op = time.monotonic() + timeout, set(names), self.operator
        back = {S.PREPARING_FOR_MAINTENANCE: op.cancel_maintenance, S.MAINTENANCE: op.activate_host}
        while late := [(n, h.state) for n, h in self.manager.cluster.hosts().items()
                       if n in wanted and h.state is not S.UP]:
            if time.monotonic() > deadline:
                raise AssertionError(f"{len(late)} hosts not Up, {late[0]} first")
            for name, state in late:
                with contextlib.suppress(ClusterError):  # the manager moved it meanwhile
                    back.get(state, op.heartbeat)(name)
            time.sleep(INTERVAL)

    def change(self, count: int = CHANGED) -> None:
        """``count`` host transitions by the operator, round the hosts: Up -> maintenance,
        PreparingForMaintenance -> cancelled, Maintenance -> activated."""
        op, done, tries, refused = self.operator, 0, 0, Counter[str]()
        acts: dict[HostState, Callable[[str], Any]] = {S.UP: op.start_maintenance, S.MAINTENANCE: op.activate_host,
                                                       S.PREPARING_FOR_MAINTENANCE: op.cancel_maintenance}
        while done < count and tries < 20 * count:
            name = self.names[self._cursor % len(self.names)]
            self._cursor, tries = self._cursor + 1, tries + 1
            act = acts.get(op.host(name).state)
            try:
                if act is not None:
                    act(name)
                    done += 1
            except ClusterError as exc:  # the manager moved it meanwhile
                refused[f"{type(exc).__name__}: {exc}"[:120]] += 1
        assert done == count, f"only {done}/{count} transitions; refused: {refused.most_common(3)}; states: " \
            f"{Counter(str(h.state) for h in self.manager.cluster.hosts().values())}"


# ---------------------------------------------------------------------------- the client process


def _client(conn: Connection, url: str, cafile: str, token: str) -> None:
    """The second process: runs the commands it is sent, answers with what it measured."""
    import httpx

    tls = ssl.create_default_context(cafile=cafile)
    headers = {"Authorization": f"Bearer {token}"}
    while (command := conn.recv())[0] != "stop":
        cpu = time.process_time()
        if command[0] == "load":
            result = asyncio.run(_load(url, tls, headers, *command[1:]))
        else:
            times, bodies = [], set()
            with httpx.Client(base_url=url, verify=tls, headers=headers, timeout=60) as client:
                for _ in range(command[1]):
                    if command[2]:  # the server changes hosts first
                        conn.send(("change",))
                        conn.recv()
                    t0 = time.perf_counter()
                    response = client.get("/api/v1/hosts")
                    body = response.content
                    times.append(time.perf_counter() - t0)
                    if response.status_code != 200:
                        raise AssertionError(f"GET /hosts: {response.status_code} {body[:200]!r}")
                    bodies.add(hash(body))
            result = {"times": times, "distinct": len(bodies), "bytes": len(body)}
        conn.send(("done", {**result, "cpu": time.process_time() - cpu}))


async def _load(url: str, tls: ssl.SSLContext, headers: dict[str, str], clients: int, seconds: float) -> dict[str, Any]:
    """``clients`` clients (an httpx client each: one shared pool of 100 connections costs
    httpcore a scan of them all per request, and the client process a whole core)."""
    import httpx

    tally = Tally()

    async def cycles(c: int) -> None:
        async with httpx.AsyncClient(base_url=url, verify=tls, headers=headers, timeout=60) as http:

            async def call(kind: str, method: str, path: str, **kwargs: Any) -> dict[str, Any] | None:
                t0 = time.perf_counter()
                try:
                    response = await http.request(method, path, **kwargs)
                except Exception as exc:  # every failure counts
                    tally.error(f"{method} {kind}: {type(exc).__name__}: {exc}")
                    return None
                tally.call(kind, t0)
                if not 200 <= response.status_code < 300:
                    tally.error(f"{method} {kind}: {response.status_code} {response.text[:160]}")
                    return None
                body: dict[str, Any] = response.json()
                return body

            async def wait(op: dict[str, Any] | None) -> None:
                while op is not None and op["state"] not in DONE:
                    op = await call("wait", "GET", f"/api/v1/operations/{op['id']}/wait", params={"timeout": 30})
                if op is not None:
                    tally.ended(op)

            k = 0
            while time.perf_counter() - tally.started < seconds:
                name, k = f"c{c}-{k}", k + 1
                made = await call("create", "POST", "/api/v1/workloads", json=workload_doc(name))
                await wait(made["operation"] if made else None)
                await wait(await call("delete", "DELETE", f"/api/v1/workloads/{name}"))

    await asyncio.gather(*(cycles(c) for c in range(clients)))
    return tally.result()


class Client:
    """The second process, and this side of its requests for host changes."""

    def __init__(self, server: Server) -> None:
        self.server = server
        ctx = multiprocessing.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(target=_client, args=(child, server.api.url, str(server.api.cert), server.token),
                                   daemon=True)
        self.process.start()

    def run(self, *command: Any) -> dict[str, Any]:
        self.conn.send(command)
        while (message := self.conn.recv())[0] == "change":
            self.server.change()
            self.conn.send(("ok",))
        result: dict[str, Any] = message[1]
        return result

    def close(self) -> None:
        self.conn.send(("stop",))
        self.process.join(10)

