"""The API over the network (issue 16): uvicorn on a loopback port with the self-signed
certificate made on the first start (and the same one on the next), httpx trusting
exactly that certificate; server-sent events received as they happen; a manager served
through ``serve_manager``; the client of clustercore/client.py against it."""

from __future__ import annotations

import json
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from clustercore import FakeClock, Plugins, auth
from clustercore.api import ApiServer, create_app, serve_manager
from clustercore.api.tls import CERT, KEY
from clustercore.client import Client, fingerprint, server_certificate
from clustercore.manager import Manager
from clustercore.store.memory import MemoryStore
from clustercore.testing import FakeFlavor

from .api_support import Env, env


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Env, ApiServer]]:
    e = env()
    server = ApiServer(create_app(e.cluster), "127.0.0.1:0", state_dir=tmp_path / "state").start()
    try:
        yield e, server
    finally:
        server.stop()


def trusting(cert: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(cert))


def test_tls_with_a_certificate_made_once_and_pinned_by_its_fingerprint(served: tuple[Env, ApiServer],
                                                                         tmp_path: Path) -> None:
    e, server = served
    state = tmp_path / "state"
    assert (state / CERT).exists() and (state / KEY).stat().st_mode & 0o077 == 0
    assert server.url.startswith("https://127.0.0.1:") and server.port > 0
    pem = server_certificate(server.url)
    assert fingerprint(pem) == server.fingerprint
    with httpx.Client(base_url=server.url, verify=trusting(server.cert)) as http:
        answer = http.get("/api/v1/whoami", headers={"Authorization": f"Bearer {e.tokens['operator']}"})
        assert answer.status_code == 200 and answer.json()["role"] == "operator"
    with httpx.Client(base_url=server.url) as untrusting, pytest.raises(httpx.ConnectError):
        untrusting.get("/api/v1/whoami")
    again = ApiServer(create_app(e.cluster), "127.0.0.1:0", state_dir=state)
    assert again.fingerprint == server.fingerprint  # the same certificate on the next start
    with Client(server.url, e.tokens["admin"], ca=server.cert) as client:  # the CLI's client, name checked
        assert [h["name"] for h in client.hosts()] == ["h1", "h2", "h3"]
        op = client.start_maintenance("h3")
        assert client.operation(op["id"])["state"] == "Pending"


def test_server_sent_events_arrive_as_they_happen(served: tuple[Env, ApiServer]) -> None:
    e, server = served
    seen: list[dict[str, object]] = []
    opened = threading.Event()

    def follow() -> None:
        with httpx.Client(base_url=server.url, verify=trusting(server.cert), timeout=10) as http, \
                http.stream("GET", "/api/v1/events/stream", params={"kind": "audit"},
                            headers={"Authorization": f"Bearer {e.tokens['viewer']}"}) as stream:
            assert stream.status_code == 200 and stream.headers["content-type"].startswith("text/event-stream")
            opened.set()
            for line in stream.iter_lines():
                if line.startswith("data:"):
                    seen.append(json.loads(line[5:]))
                    if len(seen) == 2:
                        return

    thread = threading.Thread(target=follow, daemon=True)
    thread.start()
    assert opened.wait(10)
    time.sleep(0.2)
    with Client(server.url, e.tokens["admin"], ca=server.cert) as client:
        client.update_host("h1", {"labels": {"a": "1"}})
        client.update_host("h2", {"labels": {"a": "2"}})
    thread.join(10)
    assert [ev["subject"] for ev in seen] == ["host/h1", "host/h2"]
    assert all(ev["kind"] == "audit" and "by admin" in str(ev["reason"]) and ev["revision"] for ev in seen)
    with Client(server.url, e.tokens["viewer"], ca=server.cert) as client:
        past = client.stream_events(subject="host/h2", kind="audit", since=0)
        assert next(past)["subject"] == "host/h2"
        past.close()
    with httpx.Client(base_url=server.url, verify=trusting(server.cert)) as http:
        assert http.get("/api/v1/events/stream").status_code == 401
        for role in ("operator", "admin"):  # the viewer's is above; every role may follow
            with http.stream("GET", "/api/v1/events/stream",
                             headers={"Authorization": f"Bearer {e.tokens[role]}"}) as stream:
                assert stream.status_code == 200


def test_serve_manager_answers_for_a_manager(tmp_path: Path) -> None:
    clock = FakeClock()
    store = MemoryStore(clock=clock)
    manager = Manager(store, "m1", plugins=Plugins([FakeFlavor("fake")], entry_points=False), clock=clock)
    manager.step()
    admin = auth.create_token(store, "root", "admin")
    server = serve_manager(manager, "127.0.0.1:0", state_dir=tmp_path)
    try:
        with Client(server.url, admin, ca=server.cert) as client:
            answer = client.add_host({"name": "n1", "capacity": {"cpu": 2, "memory": 1024}})
            assert answer["host"]["state"] == "Installing" and answer["credential"]
            assert client.whoami()["name"] == "root"
        with Client(server.url, answer["credential"], ca=server.cert) as host:
            host.heartbeat("n1", {"boot_id": "b1"})
        with httpx.Client(base_url=server.url, verify=trusting(server.cert)) as http:
            text = http.get("/metrics", headers={"Authorization": f"Bearer {admin}"}).text
            assert "clustercore_leader 1.0" in text
    finally:
        server.stop()
