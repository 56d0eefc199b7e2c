"""The CLI's side of the API, with the answers given by httpx's MockTransport: exit codes
by status, one-line errors naming the field, ``-o json`` that parses, tables, progress
bars for ``--wait``, ``events --follow`` and Ctrl-C. (Against the real app:
test_cli_api.py.)"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from clustercore.cli import login, main
from clustercore.client import Client

Handler = Callable[[httpx.Request], httpx.Response]


@pytest.fixture
def api(monkeypatch: pytest.MonkeyPatch) -> Callable[[Handler], list[httpx.Request]]:
    """Make every API command talk to ``handler``; the requests it got."""
    def install(handler: Handler) -> list[httpx.Request]:
        seen: list[httpx.Request] = []

        def record(request: httpx.Request) -> httpx.Response:
            seen.append(request)
            return handler(request)

        def connect(args: argparse.Namespace) -> Client:
            return Client("https://m:1", "cc_t_s", transport=httpx.MockTransport(record))
        monkeypatch.setattr(login, "connect", connect)
        return seen
    return install


def answer(status: int, body: Any) -> Handler:
    return lambda request: httpx.Response(status, json=body)


@pytest.mark.parametrize(("status", "kind", "code"), [
    (404, "UnknownHost", 3), (401, "Unauthorized", 4), (403, "Forbidden", 4), (409, "Conflict", 5),
    (422, "ValidationError", 1), (503, "NotLeader", 1), (413, "TooLarge", 1),
])
def test_exit_codes_by_status(api: Any, capsys: pytest.CaptureFixture[str], status: int, kind: str,
                              code: int) -> None:
    api(answer(status, {"error": kind, "message": f"{kind} said no", "field": "capacity.cpu"}))
    assert main(["host", "show", "node1"]) == code
    out = capsys.readouterr()
    assert out.out == ""
    assert out.err == f"clustercore: error: {kind} said no (field 'capacity.cpu')\n"


def test_listings_as_json_and_as_tables(api: Any, capsys: pytest.CaptureFixture[str]) -> None:
    hosts = [{"name": "node2", "state": "Maintenance", "reason": "drained", "capacity": {"cpu": 8, "memory": 4096},
              "workloads": []},
             {"name": "node1", "state": "Up", "reason": "", "capacity": {"cpu": 4, "memory": 2048},
              "workloads": [{"name": "web1"}, {"name": "[db]"}]}]
    api(answer(200, hosts))
    assert main(["host", "list", "-o", "json"]) == 0
    assert json.loads(capsys.readouterr().out) == sorted(hosts, key=lambda h: str(h["name"]))
    assert main(["-o", "json", "host", "list"]) == 0  # the option before the subcommand too
    assert json.loads(capsys.readouterr().out)[0]["name"] == "node1"
    assert main(["host", "list"]) == 0
    table = capsys.readouterr().out
    assert "NAME" in table and "Maintenance" in table and "web1, [db]" in table  # rich markup escaped
    assert table.index("node1") < table.index("node2")


def test_show_as_json_and_as_fields(api: Any, capsys: pytest.CaptureFixture[str]) -> None:
    vm = {"name": "web1", "flavor": "vm", "placement": {"host": "node1", "state": "Running"}, "ha": True}
    api(answer(200, vm))
    assert main(["vm", "show", "web1", "-o", "json"]) == 0
    assert json.loads(capsys.readouterr().out) == vm
    assert main(["vm", "show", "web1"]) == 0
    out = capsys.readouterr().out
    assert "name" in out and "web1" in out and '"host": "node1"' in out and "yes" in out


def operation(state: str, progress: float, step: str = "", error: str = "") -> dict[str, Any]:
    return {"id": "5c1e09ab" + "0" * 24, "kind": "maintenance", "target": "node1", "state": state,
            "progress": progress, "step": step, "result": "", "error": error}


def script(*ops: dict[str, Any]) -> Handler:
    """The first answer for the request that starts it, then one state per poll."""
    states = iter(ops)
    last: list[dict[str, Any]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        last[:] = [next(states, last[0] if last else ops[-1])]
        return httpx.Response(202 if request.method == "POST" else 200, json=last[0])
    return handler


def test_wait_shows_progress_until_done(api: Any, capsys: pytest.CaptureFixture[str]) -> None:
    seen = api(script(operation("Pending", 0), operation("Running", 0), operation("Running", 50, "migrating web1"),
                      operation("Succeeded", 100)))
    assert main(["host", "maintenance", "node1", "--wait"]) == 0
    out = capsys.readouterr()
    assert out.out == "maintenance node1 (5c1e09ab) Succeeded\n"
    assert "maintenance node1 (5c1e09ab)" in out.err and "100%" in out.err  # the bar, on stderr
    assert [r.method for r in seen][:2] == ["POST", "GET"]
    assert json.loads(seen[0].content) == {"stop_unmovable": False}


def test_wait_for_a_failure_is_exit_1_with_its_error(api: Any, capsys: pytest.CaptureFixture[str]) -> None:
    api(script(operation("Running", 10), operation("Failed", 40, error="web1 could not move: no valid host")))
    assert main(["host", "maintenance", "node1", "--wait"]) == 1
    err = capsys.readouterr().err.splitlines()
    assert err[-1] == "clustercore: error: maintenance node1 (5c1e09ab) failed: web1 could not move: no valid host"
    api(script(operation("Running", 10), operation("Cancelled", 40)))
    assert main(["op", "wait", "5c1e09ab" + "0" * 24, "-o", "json"]) == 1
    out = capsys.readouterr()
    assert json.loads(out.out)["state"] == "Cancelled" and out.err.endswith("was cancelled\n")


def test_wait_timeout(api: Any, capsys: pytest.CaptureFixture[str]) -> None:
    api(script(operation("Running", 30, "draining")))
    assert main(["op", "wait", "5c1e09ab" + "0" * 24, "--wait-timeout", "0.2", "-o", "json"]) == 1
    assert capsys.readouterr().err.endswith("still Running at 30% after 0.2 s\n")


def test_without_wait_the_operation_is_named(api: Any, capsys: pytest.CaptureFixture[str]) -> None:
    api(script(operation("Pending", 0)))
    assert main(["vm", "migrate", "web1", "--to", "node2"]) == 0
    assert capsys.readouterr().out == ("maintenance node1 (5c1e09ab) Pending: clustercore op wait "
                                       f"5c1e09ab{'0' * 24}\n")


def test_a_short_operation_id_is_enough(api: Any, capsys: pytest.CaptureFixture[str]) -> None:
    ops = [operation("Running", 5), {**operation("Running", 5), "id": "ff" * 16}]

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=ops if request.url.path.endswith("/operations") else ops[0])
    seen = api(handler)
    assert main(["op", "show", "5c1e", "-o", "json"]) == 0
    assert seen[-1].url.path == f"/api/v1/operations/5c1e09ab{'0' * 24}"


def test_events_follow_prints_each_event_until_ctrl_c(api: Any, capsys: pytest.CaptureFixture[str]) -> None:
    class Stream(httpx.SyncByteStream):
        def __iter__(self) -> Any:
            yield b'data: {"time": 0, "subject": "host/node1", "kind": "state", "old": "Up", '
            yield b'"new": "PreparingForMaintenance", "reason": "by alice"}\n\n'
            yield b': keepalive\n\n'
            raise KeyboardInterrupt  # Ctrl-C while waiting for the next one

    api(lambda request: httpx.Response(200, stream=Stream(), headers={"content-type": "text/event-stream"}))
    assert main(["events", "--follow"]) == 130
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 1 and out[0].endswith("host/node1: state Up -> PreparingForMaintenance (by alice)")
    assert main(["events", "--follow", "-o", "json"]) == 130
    assert json.loads(capsys.readouterr().out)["new"] == "PreparingForMaintenance"


def test_vm_create_reads_yaml_and_json(api: Any, tmp_path: Any, capsys: pytest.CaptureFixture[str]) -> None:
    seen = api(answer(202, {"workload": {"name": "w1"}, "operation": operation("Pending", 0)}))
    (tmp_path / "w.yaml").write_text("name: w1\nflavor: vm\nvm:\n  memory: {size: 64}\n")
    (tmp_path / "w.json").write_text('{"name": "w1", "flavor": "vm", "vm": {"memory": {"size": 64}}}')
    for name in ("w.yaml", "w.json"):
        assert main(["vm", "create", "-f", str(tmp_path / name)]) == 0
        assert json.loads(seen[-1].content) == {"name": "w1", "flavor": "vm", "vm": {"memory": {"size": 64}}}
    assert "workload w1 defined" in capsys.readouterr().out
    (tmp_path / "bad.yaml").write_text("name: [w1\n")
    assert main(["vm", "create", "-f", str(tmp_path / "bad.yaml")]) == 1
    assert capsys.readouterr().err.startswith(f"clustercore: error: {tmp_path / 'bad.yaml'}: not valid YAML")
    (tmp_path / "list.yaml").write_text("- a\n")
    assert main(["vm", "create", "-f", str(tmp_path / "list.yaml")]) == 2
    assert main(["vm", "create", "-f", str(tmp_path / "missing.yaml")]) == 1
    assert "cannot read" in capsys.readouterr().err


def test_host_update_merges_labels(api: Any, capsys: pytest.CaptureFixture[str]) -> None:
    host = {"name": "node1", "labels": {"rack": "r1", "old": "x"}, "capacity": {"cpu": 4, "memory": 2048}}
    seen = api(answer(200, host))
    assert main(["host", "update", "node1", "--label", "zone=a", "--unlabel", "old", "--cpu", "8"]) == 0
    assert json.loads(seen[-1].content) == {"labels": {"rack": "r1", "zone": "a"},
                                            "capacity": {"cpu": 8, "memory": 2048}}
    assert seen[-1].method == "PATCH"
    assert main(["host", "update", "node1"]) == 2


def test_cluster_configure_nests_dotted_keys(api: Any) -> None:
    seen = api(answer(200, {}))
    assert main(["cluster", "configure", "fencing.enabled=false", "drain_parallel=3", "policy=none"]) == 0
    assert json.loads(seen[-1].content) == {"fencing": {"enabled": False}, "drain_parallel": 3, "policy": "none"}
