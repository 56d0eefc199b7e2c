"""The HTTP API under load, side by side with the same work done in process.

The server is what ``clustercore manager run --listen`` serves: a :class:`Manager` on the
memory store (fake flavor ``sim``, real clock) passing every ``INTERVAL`` s in a thread, its
app on uvicorn over TLS (the self-signed certificate) on a loopback port. Hosts are
registered through the manager and heartbeat every 10 s (a tenth of them each second, from
a thread of the same process), so they are Up. Every HTTP client runs in a second process
(multiprocessing, spawn), so the server's process is measured alone; both processes' CPU is
reported. At 1,000 hosts, then at 10,000:

1. ``GET /api/v1/hosts``, one keep-alive client reading the body whole: nothing changing,
   then 100 host transitions by the operator's Cluster before each read (maintenance, cancel,
   activate, round the hosts; untimed). In the same rounds, in process: ``Cluster.hosts()``
   of the manager (the floor: objects, no JSON) and a ReadCache (what the API answers from:
   the JSON bytes, no HTTP).
2. 100 concurrent clients (an httpx client each), each in a loop for 30 s: ``POST
   /workloads`` (defined, start operation), ``GET /operations/{id}/wait``, ``DELETE``
   (delete operation), wait; then each finishes its cycle. The leading manager carries out
   every operation. Floor: 100 threads doing the same loop with ``Cluster.define`` /
   ``request`` / ``wait_operation`` in process. Each must leave no workload or placement.
"""

from __future__ import annotations

import logging
import os
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from bench.api_rig import CHANGED, INTERVAL, Client, Server, Tally, workload_doc
from clustercore.model import Workload

TITLE = "HTTP API: GET /hosts at 10,000 hosts; 100 clients creating and deleting workloads"
HOSTS = (1_000, 10_000)
ROUNDS, PER_ROUND = 5, 40  # 200 reads of each kind per scenario
CLIENTS, SECONDS, WINDOW = 100, 30.0, 5.0
QUIET, QUIET_WAIT = 0.8, 3600.0  # 1-minute load to wait for before measuring, for at most this long


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


def _ms(values: list[float]) -> str:
    return f"{_pct(values, 0.5) * 1000:.1f} / {_pct(values, 0.99) * 1000:.1f} / {max(values) * 1000:.1f}"


def _p50_99(values: list[float]) -> str:
    return f"{_pct(values, 0.5) * 1000:.1f} / {_pct(values, 0.99) * 1000:.1f}"


# ---------------------------------------------------------------------------- measurements


def reads(server: Server, client: Client, change: bool) -> dict[str, Any]:
    """ROUNDS rounds of PER_ROUND reads each way: over HTTP, the API's cache in process,
    ``Cluster.hosts()`` in process; per round the ratio of the HTTP p50 to ``hosts()``'s."""
    from clustercore.api.cache import ReadCache

    cache = ReadCache(server.store)
    cache.hosts_json()
    times: dict[str, list[float]] = {"http": [], "cache": [], "floor": []}
    ratios, cpu, distinct = [], 0.0, 0
    try:
        for _ in range(ROUNDS):
            got = client.run("get", PER_ROUND, change)
            times["http"] += got["times"]
            cpu, distinct = cpu + got["cpu"], distinct + got["distinct"]
            for kind, read in (("cache", cache.hosts_json), ("floor", server.manager.cluster.hosts)):
                for _ in range(PER_ROUND):
                    if change:
                        server.change()
                    t0 = time.perf_counter()
                    read()
                    times[kind].append(time.perf_counter() - t0)
            ratios.append(_pct(got["times"], 0.5) / _pct(times["floor"][-PER_ROUND:], 0.5))
    finally:
        cache.close()
    server.until_up(server.names)  # every host back to Up
    return {"hosts": len(server.names), "change": change, "ratios": ratios, "bytes": got["bytes"],
            "client_ms": cpu / len(times["http"]) * 1000, "distinct": distinct, **times}


def _floor(server: Server, clients: int, seconds: float) -> dict[str, Any]:
    """The clients' loop in threads of this process, through the Cluster the API writes through."""
    cluster, tally = server.operator, Tally()

    def step(kind: str, work: Callable[[str], Any], name: str) -> None:
        t0 = time.perf_counter()
        try:
            op = work(name)
        except Exception as exc:
            tally.error(f"{kind}: {type(exc).__name__}: {exc}")
            return
        tally.call(kind, t0)
        tally.ended(cluster.wait_operation(op.id, 30).to_dict())

    def create(name: str) -> Any:
        cluster.define(workload_doc(name))
        return cluster.request("start", name, by="bench")

    def delete(name: str) -> Any:
        return cluster.request("delete", name, by="bench")

    def cycles(c: int) -> None:
        k = 0
        while time.perf_counter() - tally.started < seconds:
            name, k = f"t{c}-{k}", k + 1
            step("create", create, name)
            step("delete", delete, name)

    threads = [threading.Thread(target=cycles, args=(c,)) for c in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return tally.result()


def load(server: Server, client: Client | None) -> dict[str, Any]:
    """CLIENTS clients for SECONDS, over HTTP (``client``) or in process; what is left after."""
    cpu, wall = time.process_time(), time.perf_counter()
    r = client.run("load", CLIENTS, SECONDS) if client is not None else _floor(server, CLIENTS, SECONDS)
    r["server_cpu"] = (time.process_time() - cpu) / (time.perf_counter() - wall)
    r["client_cpu"] = r.get("cpu", 0.0) / r["elapsed"]
    time.sleep(3 * INTERVAL)
    r["left"] = len(server.operator.workloads()) + len(server.operator.placements())
    r["hosts"], r["http"] = len(server.names), client is not None
    calls = r.pop("calls")
    ends = sorted(t for kind in ("create", "delete") for t, _ in calls[kind])
    r["windows"] = [sum(WINDOW * w <= t < WINDOW * (w + 1) for t in ends) / WINDOW
                    for w in range(int(SECONDS // WINDOW))]
    r["rate"], r["waits"] = len(ends) / r["elapsed"], len(calls["wait"]) / r["elapsed"]
    r["create"], r["delete"] = ([d for _, d in calls[k]] for k in ("create", "delete"))
    scheduler = server.manager.cluster.controller.scheduler
    probe = Workload.from_dict(workload_doc("probe"))
    r["start_ms"] = statistics.median(_timed(lambda: scheduler().select(probe)) for _ in range(5)) * 1000
    return r


def _timed(work: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    work()
    return time.perf_counter() - t0


def quiet() -> tuple[str, float]:
    """Wait (polling every 60 s, up to QUIET_WAIT) for the 1-minute load to fall below QUIET."""
    started = time.monotonic()
    while os.getloadavg()[0] >= QUIET and time.monotonic() - started < QUIET_WAIT:
        time.sleep(60)
    return " ".join(f"{x:.2f}" for x in os.getloadavg()), time.monotonic() - started


# ---------------------------------------------------------------------------- the report


class Resignations(logging.Handler):
    """Counts the leader giving its lease up after a pass over its limit (``manager.py``)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.count += "giving the leadership up" in record.getMessage()


def run() -> str:
    before, waited = quiet()
    logging.getLogger("clustercore").setLevel(logging.ERROR)  # conflicts with the operator's transitions
    resigned = Resignations()
    logging.getLogger("clustercore.manager").addHandler(resigned)

    def counted(work: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        since = resigned.count
        return {**work(), "resigned": resigned.count - since}
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-api-") as state:
        server = Server(Path(state))
        server.start()
        client = Client(server)
        try:
            gets, loads = [], []
            for hosts in HOSTS:
                server.grow(hosts)
                gets += [counted(partial(reads, server, client, change)) for change in (False, True)]
                loads += [counted(partial(load, server, side)) for side in (client, None)]
        finally:
            client.close()
            server.close()
    after = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return report(gets, loads, f"before: {before}" + (f" (after waiting {waited / 60:.0f} min)" if waited > 1 else "")
                  + f", after: {after}", time.perf_counter() - t0)


def report(gets: list[dict[str, Any]], loads: list[dict[str, Any]], load_avg: str, took: float) -> str:
    lines = [
        f"Server: a Manager (memory store, fake flavor, a pass every {INTERVAL:g} s) and its API (uvicorn, TLS, "
        "loopback) in one process, hosts Up and heartbeating every 10 s. Clients: httpx in a second process. Load "
        f"average (1, 5, 15 min) {load_avg}; the whole benchmark took {took / 60:.1f} min (`python -m bench api`).",
        "", f"| GET /api/v1/hosts ({ROUNDS} rounds of {PER_ROUND}) | hosts | body | HTTP, ms p50 / p99 / max "
        "| API cache in process | `Cluster.hosts()` in process | HTTP / `hosts()` p50, per round min / median "
        "/ max | client CPU per GET | leader resigned |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for g in gets:
        r = g["ratios"]
        lines.append(f"| {f'{CHANGED} hosts change state before each read' if g['change'] else 'nothing changing'} "
                     f"| {g['hosts']:,} | {g['bytes'] / 1e6:.1f} MB | {_ms(g['http'])} | {_ms(g['cache'])} "
                     f"| {_ms(g['floor'])} | {min(r):.1f} / {statistics.median(r):.1f} / {max(r):.1f} "
                     f"| {g['client_ms']:.1f} ms | {g['resigned']} |")
    lines += ["", f"| {CLIENTS} clients, create, wait, delete, wait for {SECONDS:.0f} s | hosts | creates + deletes/s "
              f"| per {WINDOW:.0f} s min / median / max | create ms p50 / p99 | delete ms p50 / p99 | operations "
              "succeeded / requested | errors | left | server CPU | client CPU | leader resigned |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in loads:
        w, what = r["windows"], f"HTTPS (+ {r['waits']:.0f} waits/s)" if r["http"] else "in process, threads"
        lines.append(f"| {what} "
                     f"| {r['hosts']:,} | {r['rate']:.0f} | {min(w):.0f} / {statistics.median(w):.0f} / {max(w):.0f} "
                     f"| {_p50_99(r['create'])} | {_p50_99(r['delete'])} | {r['succeeded']:,} / {r['requested']:,} "
                     f"| {len(r['errors'])} | {r['left']} | {r['server_cpu']:.0%} | {r['client_cpu']:.0%} "
                     f"| {r['resigned']} |")
    lines.append("")
    for api, floor in zip(loads[::2], loads[1::2], strict=True):
        ratio = statistics.median(api["windows"]) / statistics.median(floor["windows"])
        lines.append(f"At {api['hosts']:,} hosts: HTTPS / in process (creates + deletes per s, medians of the "
                     f"{WINDOW:.0f}-s windows): **{ratio:.2f}**; "
                     f"the leader's start of one workload (a scheduler made over every host, then its select) took "
                     f"{api['start_ms']:.1f} ms.")
    lines.append("Leader resigned: times the manager gave its lease up after a pass over its limit (a third of "
                 "the 10-s TTL, `manager run`'s default), to be elected again; its operations wait meanwhile.")
    for r in loads:
        if r["errors"]:
            lines.append(f"Errors at {r['hosts']:,} hosts ({'HTTPS' if r['http'] else 'in process'}): "
                         f"{len(r['errors'])}, the first `{r['errors'][0]}`.")
    return "\n".join(lines)
