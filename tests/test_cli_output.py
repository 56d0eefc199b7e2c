"""The CLI's output for answers the real app gives rarely or never on demand, with httpx's
MockTransport answering: the exit code of every error status, tables that escape rich's
markup, progress bars and the one-line error of a failed, cancelled or unfinished
operation, Ctrl-C in the middle of ``events --follow``. (Everything against the real app:
test_cli_api.py and test_cli_api_procs.py.)"""

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


