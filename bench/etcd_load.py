"""The hosts' side of ``bench.etcd``: simulated host agents in one process of several.

Each process beats for its share of the hosts (their credentials issued at registration)
from one asyncio loop over a few keep-alive HTTP/1.1 connections to the etcd members
(spread over the three). A beat sends what :meth:`clustercore.agent.HostAgent.beat` sends
through :class:`~clustercore.store.etcd.EtcdStore` (same paths, same bodies): a lease
grant on the first beat, a keepalive once half of the 40 s lease is used (every other
beat), and a ``/kv/txn`` putting the encoded :class:`~clustercore.model.HostReport` with
its credential under the lease; a lost lease is granted anew. Only the client differs:
``requests`` costs about 0.9 ms of CPU per request, which at 1,500 requests/s would take
most of the machine; a raw HTTP/1.1 request here costs a small fraction of that.

Every beat has a due time (``start + k * interval + offset``); three instants are kept:
``woke`` (the loop ran the host's coroutine: the generator's own lag), ``sent`` (a
connection was free and the request written: waiting here means the store answers slowly)
and ``done`` (the last answer read). The parent asks over a pipe (``stats``, ``silence``,
``stop``); ``stats`` also gives this process's CPU seconds, so its share of a core is known.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ctypes
import json
import signal
import time
from multiprocessing.connection import Connection
from typing import Any

from clustercore import HostReport
from clustercore.state import HEARTBEATS, encode
from clustercore.store.etcd import parse_url

CONNECTIONS = 64  # keep-alive connections per process (Little: 1,500 req/s x 50 ms answers = 75 at once)


def die_with_parent() -> None:
    """SIGKILL this process when the bench's process dies, however it dies (Linux prctl)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C: the parent stops us


class LeaseLost(Exception):
    pass


class Http:
    """One keep-alive HTTP/1.1 connection to an etcd member (its JSON gateway)."""

    def __init__(self, base: str) -> None:
        host, port = base.split("://", 1)[1].rsplit(":", 1)
        self.host, self.port = host, int(port)
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        self.writer.write(b"POST /v3%s HTTP/1.1\r\nHost: %s:%d\r\nContent-Type: application/json\r\n"
                          b"Content-Length: %d\r\n\r\n%s" % (path.encode(), self.host.encode(), self.port,
                                                                len(body), body))
        try:
            head = await self.reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            status = int(lines[0].split(" ", 2)[1])
            headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
            if "content-length" in headers:
                data = await self.reader.readexactly(int(headers["content-length"]))
            else:  # chunked (the gateway's streaming answers: keepalive)
                parts = []
                while True:
                    size = int((await self.reader.readline()).split(b";")[0], 16)
                    chunk = await self.reader.readexactly(size + 2)
                    if size == 0:
                        break
                    parts.append(chunk[:-2])
                data = b"".join(parts)
            if headers.get("connection", "").lower() == "close":
                self.close()
            return status, data
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


class Agents:
    """The beats of one process's hosts (the requests of HostAgent.beat, see the module)."""

    def __init__(self, url: str, prefix: str, hosts: list[tuple[str, str, float]], interval: float,
                 ttl: float) -> None:
        self.hosts = hosts  # (name, credential, offset in the interval)
        self.prefix = prefix
        self.interval, self.ttl = interval, ttl
        self.bases = parse_url(url)
        self.silenced: set[str] = set()
        self.last: dict[str, float] = {}  # name -> wall time of its last beat written
        self.requests = self.failures = 0
        self.samples: list[tuple[float, float, float]] = []  # (woke, sent, done) - due
        self.pool: asyncio.Queue[Http] = asyncio.Queue()

    async def _post(self, path: str, body: dict[str, Any], sent: list[float]) -> dict[str, Any]:
        connection = await self.pool.get()
        if not sent:
            sent.append(time.monotonic())
        try:
            self.requests += 1
            status, data = await connection.post(path, json.dumps(body).encode())
        finally:
            self.pool.put_nowait(connection)
        answer: dict[str, Any] = json.loads(data) if data else {}
        if status != 200:
            message = str(answer.get("message") or answer.get("error") or data[:200])
            if "lease not found" in message:
                raise LeaseLost()
            raise RuntimeError(f"etcd {path}: {status} {message}")
        return answer

    async def _host(self, name: str, credential: str, offset: float, start: float) -> None:
        key = _b64((self.prefix + HEARTBEATS + name).encode())
        value = _b64(encode(HostReport(credential=credential)))
        lease, kept_at = 0, float("-inf")
        k = 0
        while True:
            due = start + k * self.interval + offset
            k += 1
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            if name in self.silenced:
                return
            woke, sent = time.monotonic(), list[float]()
            try:
                for _ in range(2):
                    now = time.monotonic()
                    if not lease:
                        answer = await self._post("/lease/grant", {"TTL": str(int(self.ttl))}, sent)
                        lease, kept_at = int(answer["ID"]), now
                    try:
                        if now - kept_at >= self.ttl / 2:
                            answer = await self._post("/lease/keepalive", {"ID": str(lease)}, sent)
                            if int(answer.get("result", {}).get("TTL", 0)) <= 0:
                                raise LeaseLost()
                            kept_at = now
                        await self._post("/kv/txn", {"compare": [], "success": [{"request_put": {
                            "key": key, "value": value, "lease": str(lease)}}], "failure": []}, sent)
                        break
                    except LeaseLost:
                        lease = 0
                else:
                    raise RuntimeError("lease lost twice")
            except Exception:
                self.failures += 1
                continue
            done = time.monotonic()
            self.samples.append((woke - due, sent[0] - due, done - due))
            self.last[name] = time.time()
            # a beat late by more than an interval delays the next (HostAgent.run waits an
            # interval after each beat): no burst of beats to catch up
            k = max(k, int((done - start - offset) // self.interval) + 1)

    async def run(self, conn: Connection, start: float) -> None:
        loop = asyncio.get_running_loop()
        for i in range(CONNECTIONS):
            self.pool.put_nowait(Http(self.bases[i % len(self.bases)]))
        tasks = [asyncio.create_task(self._host(n, c, o, start)) for n, c, o in self.hosts]
        stopped = loop.create_future()
        cpu0 = time.process_time()

        def command() -> None:
            what, arg = conn.recv()
            if what == "silence":
                self.silenced.update(arg)
                conn.send({n: self.last.get(n, 0.0) for n in arg if n in self.last})
            elif what == "stats":
                conn.send({"requests": self.requests, "failures": self.failures, "samples": self.samples,
                           "cpu": time.process_time() - cpu0, "at": time.monotonic()})
                self.samples = []
            elif what == "stop" and not stopped.done():
                stopped.set_result(None)

        loop.add_reader(conn.fileno(), command)
        await stopped
        loop.remove_reader(conn.fileno())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        while not self.pool.empty():
            self.pool.get_nowait().close()


def main(conn: Connection, url: str, prefix: str, hosts: list[tuple[str, str, float]], interval: float,
         ttl: float) -> None:
    """A generator process: beat for ``hosts`` (name, credential, offset) from the start
    time it is sent until told to stop."""
    die_with_parent()
    conn.send("ready")
    what, start = conn.recv()
    assert what == "start"
    asyncio.run(Agents(url, prefix, hosts, interval, ttl).run(conn, start))
    conn.send("stopped")
