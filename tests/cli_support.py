"""What the CLI's end-to-end tests share: the real app (clustercore.api) served by the real
ApiServer (uvicorn, TLS with its self-signed certificate) on a loopback port, over a
simulated cluster that passes every 20 ms in a thread (a leader at work), and the
``clustercore`` command run in this process, logged in with the fingerprint the server has."""

from __future__ import annotations

import contextlib
import io
import json
import os
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import attrs

from clustercore import Cluster, FakeClock, Plugins, auth
from clustercore.api import create_app
from clustercore.api.server import ApiServer
from clustercore.cli import main

from .api_support import CONFIG, ROLES, tick


@attrs.frozen
class Result:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


def run(*args: str) -> Result:
    """``clustercore ARGS`` in this process: its exit code, stdout and stderr."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(list(args))
        except SystemExit as exc:  # argparse
            code = int(exc.code or 0)
    return Result(code, out.getvalue(), err.getvalue())


@attrs.define
class Served:
    cluster: Cluster
    clock: FakeClock
    server: ApiServer
    tokens: dict[str, str]
    config: Path
    paused: threading.Event = attrs.field(factory=threading.Event)
    silent: set[str] = attrs.field(factory=set)

    @property
    def url(self) -> str:
        return self.server.url

    def env(self) -> dict[str, str]:
        """The environment of a ``clustercore`` subprocess using this server's login."""
        return {**os.environ, "CLUSTERCORE_CONFIG": str(self.config)}


@contextlib.contextmanager
def served(config: Path, state_dir: Path, plugins: Plugins, hosts: Sequence[dict[str, Any]],
           workloads: Sequence[dict[str, Any]] = (), period: float = 0.02) -> Iterator[Served]:
    """A cluster of ``hosts`` (Up) running ``workloads``, its API on a loopback port, a
    token per role (named after it), and the CLI's config file logged in as admin. A pass
    every ``period`` seconds, each a second of the cluster's fake clock."""
    clock = FakeClock()
    c = Cluster(plugins=plugins, clock=clock, config=CONFIG, monotonic=clock.now)
    for host in hosts:
        c.register_host(host)
    tick(c, clock, 3)
    for workload in workloads:
        c.submit(workload)
    tokens = {role: auth.create_token(c.store, role, role, clock.now()) for role in ROLES}
    server = ApiServer(create_app(c), "127.0.0.1:0", state_dir=state_dir).start()
    s = Served(c, clock, server, tokens, config)
    stop = threading.Event()

    def passes() -> None:
        while not stop.wait(period):
            if not s.paused.is_set():
                tick(c, clock, 1, sorted(s.silent))

    thread = threading.Thread(target=passes, daemon=True)
    thread.start()
    try:
        login = run("login", "--api", s.url, "--token", tokens["admin"], "--fingerprint", server.fingerprint)
        assert login.code == 0, login.err
        yield s
    finally:
        stop.set()
        thread.join(5)
        server.stop()
