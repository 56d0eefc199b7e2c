"""The API at work (issue 16): join tokens (one use; the joined host's credential
heartbeats it to Up), operations requested, followed, awaited and cancelled through the
API, a follower manager taking writes that the leader carries out, secrets never shown,
metrics that parse, the OpenAPI document."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families

from clustercore import FakeClock, HostState, Plugins, auth
from clustercore.api import cluster as cluster_routes
from clustercore.api import create_app, events, hosts, operations, tokens, workloads
from clustercore.api.app import PREFIX
from clustercore.manager import Manager
from clustercore.metrics import Metrics
from clustercore.store.memory import MemoryStore
from clustercore.testing import FakeFlavor

from .api_support import CONFIG, Env, TestClient, env


@pytest.fixture
def ticking() -> Iterator[Env]:
    """An env whose cluster passes every 20 ms (real time) in a thread, as a leader would."""
    e = env()
    stop = threading.Event()

    def run() -> None:
        while not stop.wait(0.02):
            e.tick()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield e
    finally:
        stop.set()
        thread.join(5)


def test_a_join_token_registers_its_host_once_and_its_credential_heartbeats() -> None:
    e = env(())
    made = e.as_role("admin", "POST", "/api/v1/tokens/join", json={"host": "n1", "ttl": 600})
    assert made.status_code == 201 and made.json()["host"] == "n1" and "digest" not in made.json()
    secret = made.json()["secret"]
    assert e.call("POST", "/api/v1/join", secret, json={"name": "n2"}).json()["field"] == "name"  # not spent
    joined = e.call("POST", "/api/v1/join", secret, json={"name": "n1", "capacity": {"cpu": 4, "memory": 4096},
                                                          "labels": {"rack": "r9"}})
    assert joined.status_code == 201, joined.text
    assert joined.json()["host"]["state"] == "Installing"  # approved by the token
    again = e.call("POST", "/api/v1/join", secret, json={"name": "n1"})
    assert again.status_code == 401 and again.json()["error"] == "Unauthorized"
    credential = joined.json()["credential"]
    registered = e.cluster.query_events(subject="host/n1", kind="registered")
    assert registered and made.json()["id"] in registered[0].reason
    for _ in range(4):
        assert e.call("POST", "/api/v1/heartbeats/n1", credential, json={"boot_id": "boot-1"}).status_code == 204
        e.tick(silent=["n1"])
    assert e.cluster.host("n1").state is HostState.UP
    for wrong in (e.cluster.credentials["h1"], e.tokens["admin"], "nonsense"):
        assert e.call("POST", "/api/v1/heartbeats/n1", wrong, json={}).status_code == 401
    assert e.call("POST", "/api/v1/heartbeats/nobody", credential, json={}).status_code == 401


def test_an_expired_join_token_is_refused_and_cleared() -> None:
    e = env(())
    secret = e.as_role("admin", "POST", "/api/v1/tokens/join", json={"host": "n1", "ttl": 5}).json()["secret"]
    e.clock.advance(6)
    answer = e.call("POST", "/api/v1/join", secret, json={"name": "n1"})
    assert answer.status_code == 401 and "expired" in answer.json()["message"]
    e.as_role("admin", "POST", "/api/v1/tokens/join", json={"host": "n2"})
    assert [kv.key for kv in e.store.list(auth.JOIN)] and len(e.store.list(auth.JOIN)) == 1


def test_a_maintenance_through_the_api_reports_progress_until_it_is_done(ticking: Env) -> None:
    e = ticking
    op = e.as_role("operator", "POST", "/api/v1/hosts/h1/maintenance", json={}).json()
    assert op["kind"] == "maintenance" and op["by"] == "operator"
    second = e.as_role("operator", "POST", "/api/v1/hosts/h1/maintenance")
    assert second.status_code == 409 and op["id"] in second.json()["message"]
    done = e.as_role("viewer", "GET", f"/api/v1/operations/{op['id']}/wait", params={"timeout": 20}).json()
    assert done["state"] == "Succeeded" and done["progress"] == 100.0, done
    assert e.as_role("viewer", "GET", "/api/v1/hosts/h1").json()["state"] == "Maintenance"
    listed = e.as_role("viewer", "GET", "/api/v1/operations").json()["operations"]
    assert any(o["id"] == op["id"] and o["state"] == "Succeeded" for o in listed)
    assert e.as_role("viewer", "GET", "/api/v1/placements").json()["placements"][0]["host"] != "h1"


def test_an_operation_shows_its_progress_and_step_as_it_goes() -> None:
    e = env(("a", "b", "c", "d", "e"))
    op = e.as_role("operator", "POST", "/api/v1/hosts/h1/maintenance").json()
    seen = []
    for _ in range(10):
        e.tick()
        current = e.as_role("viewer", "GET", f"/api/v1/operations/{op['id']}").json()
        seen.append((current["state"], current["progress"], current["step"]))
        if current["state"] == "Succeeded":
            break
    running = [(p, step) for state, p, step in seen if state == "Running"]
    assert seen[-1][:2] == ("Succeeded", 100.0) and running, seen
    assert [p for p, _ in running] == sorted(p for p, _ in running) and 0 <= running[0][0] < 100
    assert any("left on h1" in step or "moving" in step for _, step in running)
    assert e.as_role("viewer", "GET", f"/api/v1/operations/{op['id']}/wait", params={"timeout": 0}).json()[
        "state"] == "Succeeded"


def test_workloads_are_created_moved_stopped_and_deleted_as_operations(ticking: Env) -> None:
    e = ticking

    def wait(op: dict[str, object]) -> dict[str, object]:
        answer = e.as_role("viewer", "GET", f"/api/v1/operations/{op['id']}/wait", params={"timeout": 20}).json()
        assert answer["state"] == "Succeeded", answer
        return dict(answer)

    created = e.as_role("operator", "POST", "/api/v1/workloads", content=b"name: web\nflavor: fake\n"
                        b"requests: {cpu: 1, memory: 128}\n", headers={"content-type": "application/yaml"}).json()
    host = wait(created["operation"])["result"]
    assert e.as_role("viewer", "GET", "/api/v1/workloads/web").json()["placement"]["host"] == host
    target = next(h for h in ("h1", "h2", "h3") if h != host)
    moved = e.as_role("operator", "POST", "/api/v1/workloads/web/migrate", json={"target": target}).json()
    assert wait(moved)["result"] == target
    stop = e.as_role("operator", "POST", "/api/v1/workloads/web/stop", json={"force": False}).json()
    wait(stop)
    assert e.as_role("viewer", "GET", "/api/v1/workloads/web").json()["placement"] is None
    started = e.as_role("operator", "POST", "/api/v1/workloads/web/start").json()
    wait(started)
    assert wait(e.as_role("operator", "DELETE", "/api/v1/workloads/web").json())
    assert e.as_role("viewer", "GET", "/api/v1/workloads/web").status_code == 404
    rows = e.as_role("viewer", "GET", "/api/v1/explain/w1").json()["rows"]
    assert {r["host"] for r in rows} == {"h1", "h2", "h3"} and sum(r["chosen"] for r in rows) == 1


def test_cancel_is_409_when_the_work_cannot_be_cancelled() -> None:
    e = env()
    start = e.cluster.request("stop", "w1", by="x")
    answer = e.as_role("operator", "POST", f"/api/v1/operations/{start.id}/cancel")
    assert answer.status_code == 409 and answer.json()["error"] == "NotCancellable"
    maintenance = e.as_role("operator", "POST", "/api/v1/hosts/h2/maintenance").json()
    cancelled = e.as_role("operator", "POST", f"/api/v1/operations/{maintenance['id']}/cancel").json()
    assert cancelled["cancel"] is True and "operator" in cancelled["step"]
    e.tick(2)
    assert e.cluster.operation(maintenance["id"]).state.value == "Cancelled"
    again = e.as_role("operator", "POST", f"/api/v1/operations/{maintenance['id']}/cancel")
    assert again.status_code == 409 and "Cancelled" in again.json()["message"]
    e.cluster.start_maintenance("h3")
    gone = e.as_role("operator", "DELETE", "/api/v1/hosts/h3/maintenance").json()
    assert gone["host"]["state"] == "Up" and gone["operation"] is None


def test_a_follower_takes_writes_and_the_leader_carries_them_out() -> None:
    clock = FakeClock()
    store = MemoryStore(clock=clock)
    plugins = Plugins([FakeFlavor("fake")], entry_points=False)
    leader, follower = (Manager(store, name, plugins=plugins, clock=clock) for name in ("m1", "m2"))
    assert leader.step() and not follower.step()
    leader_metrics = Metrics(store)
    leader_metrics.attach(leader)
    admin = auth.create_token(store, "ops", "admin")
    api = TestClient(create_app(follower), headers={"Authorization": f"Bearer {admin}"})
    assert api.patch("/api/v1/config", json=CONFIG.to_dict()).status_code == 200
    credentials = {}
    for name in ("a", "b"):
        answer = api.post("/api/v1/hosts", json={"name": name, "capacity": {"cpu": 4, "memory": 4096}})
        assert answer.status_code == 201, answer.text
        credentials[name] = answer.json()["credential"]

    def passes(n: int) -> None:
        for _ in range(n):
            for name, credential in credentials.items():
                assert api.post(f"/api/v1/heartbeats/{name}", json={},
                                headers={"Authorization": f"Bearer {credential}"}).status_code == 204
            clock.advance(1)
            leader.step()
            follower.step()

    passes(3)
    assert [h["state"] for h in api.get("/api/v1/hosts").json()["hosts"]] == ["Up", "Up"]
    created = api.post("/api/v1/workloads", json={"name": "w", "flavor": "fake", "requests": {"cpu": 1}}).json()
    maintenance = None
    for _ in range(6):
        passes(1)
        op = api.get(f"/api/v1/operations/{created['operation']['id']}").json()
        if op["state"] == "Succeeded" and maintenance is None:
            maintenance = api.post(f"/api/v1/hosts/{op['result']}/maintenance").json()
    assert maintenance is not None
    assert api.get(f"/api/v1/operations/{maintenance['id']}").json()["state"] == "Succeeded"
    metrics = {f.name: f for f in text_string_to_metric_families(api.get("/metrics").text)}
    assert metrics["clustercore_leader"].samples[0].value == 0  # m2 follows
    assert [s.value for s in metrics["clustercore_reconcile_pass_seconds"].samples if s.name.endswith("_count")] == [9]
    metrics = {f.name: f for f in text_string_to_metric_families(leader_metrics.render().decode())}
    assert metrics["clustercore_leader"].samples[0].value == 1
    decisions = [s for s in metrics["clustercore_scheduler_decision_seconds"].samples if s.name.endswith("_count")]
    assert decisions[0].value >= 1  # the leader placed w and drained it
    assert follower.operator.store is store  # not guarded by the follower's leadership


def test_secrets_are_never_shown_logged_or_recorded(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    e = env()
    secrets = ["s3cret-h1", e.tokens["admin"].split("_", 2)[2], e.cluster.credentials["h1"]]
    shown = [e.as_role("viewer", "GET", path).text for path in
             ("/api/v1/hosts", "/api/v1/hosts/h1", "/api/v1/events", "/api/v1/workloads", "/api/v1/config")]
    renamed = e.as_role("admin", "PATCH", "/api/v1/hosts/h1", json={"fence_devices": [
        {"agent": "ipmi", "address": "bmc-h1", "username": "admin"}]})
    assert renamed.status_code == 200 and renamed.json()["fence_devices"][0]["password_set"] is True
    opened = e.cluster.writer.secrets.open  # the store holds them sealed (clustercore.secrets)
    assert opened(e.cluster.host("h1").fence_devices[0].password) == "s3cret-h1"  # kept: not sent again
    rotated = e.as_role("admin", "PATCH", "/api/v1/hosts/h1", json={"fence_devices": [
        {"agent": "ipmi", "address": "bmc-h1", "username": "admin", "password": "n3w-s3cret"}]})
    assert opened(e.cluster.host("h1").fence_devices[0].password) == "n3w-s3cret"
    assert e.cluster.host("h1").fence_devices[0].password.startswith("sealed:")
    secrets.append("n3w-s3cret")
    added = e.as_role("admin", "POST", "/api/v1/hosts", json={"name": "h9", "fence_devices": [
        {"agent": "ipmi", "address": "bmc-h9", "password": "h9-s3cret"}]})
    secrets.append("h9-s3cret")
    made = e.as_role("admin", "POST", "/api/v1/tokens", json={"name": "dave", "role": "viewer"}).json()
    secrets.append(made["secret"].split("_", 2)[2])
    shown += [renamed.text, rotated.text, added.text, e.as_role("admin", "GET", "/api/v1/tokens").text,
              e.as_role("viewer", "GET", "/api/v1/events").text, repr(e.cluster.host("h1")),
              json.dumps([str(ev) for ev in e.cluster.query_events()]), caplog.text]
    for secret in secrets:
        for text in shown:
            assert secret not in text
    assert made["secret"].startswith("cc_") and added.json()["credential"]
    stored = b"".join(kv.value for kv in e.cluster.store.list("")).decode(errors="replace")
    for secret in ("s3cret-h1", "n3w-s3cret", "h9-s3cret"):
        assert secret not in stored  # fence passwords sealed at rest
    for token in (secrets[1], secrets[-1]):  # API tokens: only their digests
        assert token not in stored


def test_the_openapi_document_lists_every_route_and_who_may_call_it() -> None:
    e = env(())
    answer = e.client.get(f"{PREFIX}/openapi.json")  # no token needed
    assert answer.status_code == 200
    paths = answer.json()["paths"]
    for module in (hosts, workloads, events, operations, tokens, cluster_routes):
        for route in module.router.routes:
            for method in route.methods:  # type: ignore[attr-defined]
                operation = paths[PREFIX + route.path][method.lower()]  # type: ignore[attr-defined]
                assert operation["x-clustercore-auth"] in ("viewer", "operator", "admin", "join-token",
                                                           "host-credential")
                assert operation["summary"]
    assert "/metrics" in paths and answer.json()["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    assert e.client.get("/").status_code == 200 and "dashboard" in e.client.get("/").text


def test_the_metrics_parse_and_have_the_named_families() -> None:
    e = env()
    e.as_role("operator", "POST", "/api/v1/workloads/w1/migrate", json={"target": "h2"})
    before = e.as_role("viewer", "GET", "/metrics")
    assert before.headers["content-type"].startswith("text/plain")
    e.tick(2)
    text = e.as_role("viewer", "GET", "/metrics").text
    families = {f.name: f for f in text_string_to_metric_families(text)}
    for name in ("clustercore_hosts", "clustercore_placements", "clustercore_operations", "clustercore_leader",
                 "clustercore_fencing", "clustercore_migrations", "clustercore_fencing_duration_seconds",
                 "clustercore_migration_duration_seconds", "clustercore_operation_duration_seconds",
                 "clustercore_reconcile_pass_seconds", "clustercore_scheduler_decision_seconds"):
        assert name in families, name
    value = {(s.name, tuple(sorted(s.labels.items()))): s.value for f in families.values() for s in f.samples}
    assert value[("clustercore_hosts", (("state", "Up"),))] == 3
    assert value[("clustercore_placements", (("state", "Running"),))] == 1
    assert value[("clustercore_migrations_total", (("outcome", "migrated"),))] == 1
    assert value[("clustercore_operations", (("kind", "migrate"), ("state", "Succeeded")))] == 1
    assert value[("clustercore_operation_duration_seconds_count", (("kind", "migrate"),))] == 1
    assert value[("clustercore_leader", ())] == 1
    assert e.call("GET", "/metrics").status_code == 401
