"""The ``clustercore`` command against the real API (the app on uvicorn over TLS, pinned by
``clustercore login``): every host, workload, token, cluster and event command, ``-o json``
that parses, exit codes, and flags over environment over the config file."""

from __future__ import annotations

import json
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from clustercore import HostState, Plugins
from clustercore.testing import FakeFlavor

from .cli_support import Served, run, served


@pytest.fixture(scope="module")
def state_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("api-state")  # the server's certificate, made once


@pytest.fixture
def api(tmp_path: Path, state_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Served]:
    config = tmp_path / "cli" / "config.json"
    monkeypatch.setenv("CLUSTERCORE_CONFIG", str(config))
    for name in ("CLUSTERCORE_API", "CLUSTERCORE_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    hosts = [{"name": f"h{i}", "capacity": {"cpu": 8, "memory": 8192}} for i in (1, 2, 3)]
    workloads = [{"name": "w1", "flavor": "fake", "requests": {"cpu": 1, "memory": 64}}]
    with served(config, state_dir, Plugins([FakeFlavor("fake")], entry_points=False), hosts, workloads) as s:
        yield s


def test_login_stored_the_pin_and_the_token(api: Served) -> None:
    stored = json.loads(api.config.read_text())
    assert stored["api"] == api.url and stored["token"] == api.tokens["admin"] and stored["pinned"] is True
    assert stat.S_IMODE(api.config.stat().st_mode) == 0o600
    assert run("whoami", "-o", "json").json()["name"] == "admin"


def test_flags_over_environment_over_the_file(api: Served, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLUSTERCORE_TOKEN", api.tokens["viewer"])
    assert run("whoami", "-o", "json").json()["role"] == "viewer"
    assert run("whoami", "-o", "json", "--token", api.tokens["operator"]).json()["role"] == "operator"
    monkeypatch.setenv("CLUSTERCORE_API", api.url + "/")  # the same server: its pin applies
    assert run("whoami", "-o", "json").json()["role"] == "viewer"
    monkeypatch.setenv("CLUSTERCORE_TOKEN", "cc_0000000000000000_nope")
    result = run("whoami")
    assert result.code == 4 and result.err.startswith("clustercore: error: ") and result.err.count("\n") == 1


def test_hosts(api: Served, tmp_path: Path) -> None:
    listed = run("host", "list", "-o", "json")
    assert listed.code == 0 and [h["name"] for h in listed.json()] == ["h1", "h2", "h3"]
    assert [w for h in listed.json() for w in h["workloads"]] == ["w1"]
    table = run("host", "list").out
    assert all(name in table for name in ("NAME", "h1", "h2", "h3", "Up", "w1"))
    assert run("host", "show", "h1", "-o", "json").json()["state"] == "Up"
    assert "state" in run("host", "show", "h1").out
    (tmp_path / "h4.yaml").write_text("name: h4\ncapacity: {cpu: 2, memory: 1024}\nfence_devices:\n"
                                      "  - {agent: ipmi, address: bmc-h4, username: root, password: s3cret}\n")
    added = run("host", "add", "-f", str(tmp_path / "h4.yaml"))
    assert added.code == 0 and "heartbeat credential" in added.out and "s3cret" not in added.out
    assert run("host", "add", "h5", "--cpu", "2", "--memory", "512", "-o", "json").json()["host"]["name"] == "h5"
    assert run("host", "add", "h5").code == 5  # taken
    updated = run("host", "update", "h1", "--label", "rack=r1", "-o", "json")
    assert updated.code == 0 and updated.json()["labels"] == {"rack": "r1"}
    assert run("host", "update", "h1", "--label", "zone=a", "-o", "json").json()["labels"] == {"rack": "r1",
                                                                                              "zone": "a"}
    bad = run("host", "update", "h1", "--cpu", "-1")
    assert bad.code == 1 and "capacity.cpu" in bad.err and bad.err.count("\n") == 1
    assert run("host", "show", "nowhere").code == 3
    assert run("host", "confirm-down", "h2").code == 5  # h2 is Up
    assert run("host", "activate", "h2").code == 5


def test_maintenance_with_a_progress_bar_then_activate_and_remove(api: Served) -> None:
    drained = run("host", "maintenance", "h1", "--wait")
    assert drained.code == 0, drained.err
    assert drained.out.startswith("maintenance h1 (") and "Succeeded" in drained.out
    assert "100%" in drained.err  # the bar
    assert api.cluster.host("h1").state is HostState.MAINTENANCE
    assert run("host", "maintenance", "h1").code == 5  # in Maintenance already
    assert run("host", "activate", "h1").code == 0
    assert run("host", "maintenance", "h3", "--wait", "-o", "json").json()["state"] == "Succeeded"
    assert run("host", "remove", "h3").code == 0
    assert run("host", "show", "h3").code == 3


def test_a_maintenance_cancelled_halfway(api: Served) -> None:
    api.paused.set()  # the leader is slow: the drain has not begun
    started = run("host", "maintenance", "h2", "-o", "json")
    assert started.code == 0 and started.json()["state"] == "Pending"
    cancelled = run("host", "maintenance", "h2", "--cancel", "-o", "json")
    assert cancelled.code == 0 and cancelled.json()["operation"]["cancel"] is True
    api.paused.clear()
    waited = run("op", "wait", started.json()["id"][:8])
    assert waited.code == 1 and waited.err.endswith("was cancelled\n")
    assert api.cluster.host("h2").state is HostState.UP


def test_workloads(api: Served, tmp_path: Path) -> None:
    (tmp_path / "web.yaml").write_text("name: web\nflavor: fake\nrequests: {cpu: 1, memory: 128}\n")
    created = run("vm", "create", "-f", str(tmp_path / "web.yaml"), "--wait")
    assert created.code == 0, created.err
    host = api.cluster.placements()["web"].host
    assert created.out.rstrip().endswith(f"Succeeded: {host}")
    listed = run("vm", "list", "-o", "json").json()
    assert {w["name"]: w["placement"]["host"] for w in listed}["web"] == host
    assert "web" in run("workload", "list").out
    assert run("vm", "show", "web", "-o", "json").json()["placement"]["state"] == "Running"
    target = next(h for h in ("h1", "h2", "h3") if h != host)
    moved = run("vm", "migrate", "web", "--to", target, "--wait", "-o", "json")
    assert moved.code == 0 and moved.json()["result"] == target
    assert run("vm", "migrate", "web", "--to", "nowhere").code == 1  # 422 naming target
    assert run("vm", "stop", "web", "--wait").code == 0
    assert run("vm", "migrate", "web").code == 5  # not running
    pending = run("vm", "start", "web")
    assert pending.code == 0 and "clustercore op wait" in pending.out
    assert run("op", "wait", pending.out.split()[-1]).code == 0
    assert run("vm", "delete", "web", "--wait").code == 0
    assert run("vm", "show", "web").code == 3
    (tmp_path / "bad.json").write_text('{"name": "bad", "flavor": "fake", "requests": {"cpu": "lots"}}')
    bad = run("vm", "create", "-f", str(tmp_path / "bad.json"))
    assert bad.code == 1 and "requests.cpu" in bad.err and bad.err.count("\n") == 1
    assert run("vm", "create", "-f", str(tmp_path / "web.yaml")).code == 0
    assert run("vm", "create", "-f", str(tmp_path / "web.yaml")).code == 5  # exists


def test_operations(api: Served) -> None:
    run("vm", "stop", "w1", "--wait")
    ops = run("op", "list", "-o", "json").json()
    assert ops[-1]["kind"] == "stop" and ops[-1]["by"] == "admin" and ops[-1]["state"] == "Succeeded"
    assert "stop" in run("op", "list").out
    shown = run("op", "show", ops[-1]["id"][:6], "-o", "json")
    assert shown.json()["id"] == ops[-1]["id"]
    assert run("op", "cancel", ops[-1]["id"]).code == 5  # done: cannot be
    assert run("op", "show", "f" * 32).code == 3


def test_roles_and_tokens(api: Served) -> None:
    made = run("token", "create", "ann", "--role", "viewer", "-o", "json").json()
    secret = made["secret"]
    assert run("whoami", "--token", secret).out.startswith("ann (viewer)")
    listed = run("token", "list", "-o", "json").json()
    assert "ann" in [t["name"] for t in listed] and "secret" not in json.dumps(listed)
    denied = run("host", "maintenance", "h1", "--token", secret)
    assert denied.code == 4 and denied.out == ""
    assert run("token", "list", "--token", secret).code == 4
    assert run("vm", "stop", "w1", "--token", api.tokens["operator"]).code == 0
    assert run("host", "approve", "h1", "--token", api.tokens["operator"]).code == 4
    assert run("token", "revoke", made["id"]).code == 0
    assert run("whoami", "--token", secret).code == 4
    assert run("token", "revoke", "0" * 16).code == 3
    join = run("token", "create", "--join", "n9")
    assert join.code == 0 and join.out.startswith("ccj_")
    assert run("token", "create", "bob").code == 2  # no role
    audit = api.cluster.query_events(subject=f"token/{made['id']}", kind="audit")
    assert [e.reason.split(" by ")[1] for e in audit] == ["admin (admin)"] * 2  # made and revoked, by admin


def test_cluster_commands(api: Served) -> None:
    assert run("cluster", "config", "-o", "json").json()["drain_parallel"] == 2
    changed = run("cluster", "configure", "drain_parallel=3", "fencing.enabled=false", "-o", "json").json()
    assert changed["drain_parallel"] == 3 and changed["fencing"]["enabled"] is False
    bad = run("cluster", "configure", "policy=evenly-distributed")
    assert bad.code == 1 and "policy" in bad.err and bad.err.count("\n") == 1
    assert run("cluster", "configure", "drain_parallel=2", "--token", api.tokens["operator"]).code == 4
    capacity = run("cluster", "capacity", "-o", "json").json()
    assert capacity["hosts"] == 3 and capacity["resources"]["cpu"]["total"] == 24
    assert "RESOURCE" in (table := run("cluster", "capacity").out) and "N+1: " in table
    assert run("cluster", "placements", "-o", "json").json()[0]["workload"] == "w1"
    rows = run("explain", "w1", "-o", "json").json()
    assert {r["host"] for r in rows} == {"h1", "h2", "h3"}
    assert "HOST" in run("explain", "w1").out
    assert [r["host"] for r in run("explain", "w1", "--host", "h2", "-o", "json").json()] == ["h2"]
    assert run("explain", "nothing").code == 3


def test_events(api: Served) -> None:
    run("host", "update", "h2", "--label", "rack=r2")
    events = run("events", "--subject", "host/h2", "-o", "json").json()
    assert events and all(e["subject"] == "host/h2" for e in events)
    assert any("admin" in e["reason"] for e in events)
    assert "host/h2" in run("events", "--subject", "host/h2", "--since", "999000").out  # the fake clock
    assert run("events", "--since", "1d", "-o", "json").json() == []  # a day ago is after the fake clock
    assert run("events", "--kind", "no-such-kind", "-o", "json").json() == []
    assert run("events", "--limit", "2", "-o", "json").code == 0
