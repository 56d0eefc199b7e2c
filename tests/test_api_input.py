"""Bad requests (issue 16): malformed JSON is a 400, unknown fields and wrong types a 422
naming the field, bodies over 1 MiB a 413 before anything runs, and nothing is ever
written by a refused call (the store's revision is the same after). Random JSON bodies
never make the server fail (hypothesis)."""

from __future__ import annotations

import json
from typing import Any

import hypothesis.strategies as st
import pytest
from hypothesis import HealthCheck, given, settings

from .api_support import Env, env

BIG = 2 << 20


@pytest.fixture(scope="module")
def e() -> Env:
    return env()


def refused(e: Env, status: int, method: str, path: str, role: str = "admin", **kwargs: Any) -> dict[str, Any]:
    """The error a call gets; asserts its status and that nothing was written."""
    before = e.store.revision
    answer = e.as_role(role, method, path, **kwargs)
    assert answer.status_code == status, answer.text
    assert e.store.revision == before, f"{method} {path} wrote to the store and answered {status}"
    if "json" not in answer.headers.get("content-type", ""):
        return {"error": "TooLarge", "message": answer.text, "field": None}  # starlette's own 413
    error: dict[str, Any] = answer.json()
    assert set(error) == {"error", "message", "field"} and error["message"]
    return error


BODIED = [("POST", "/api/v1/hosts"), ("PATCH", "/api/v1/hosts/h1"), ("POST", "/api/v1/workloads"),
          ("PATCH", "/api/v1/config"), ("POST", "/api/v1/tokens"), ("POST", "/api/v1/tokens/join"),
          ("POST", "/api/v1/hosts/h2/maintenance"), ("POST", "/api/v1/workloads/w1/stop"),
          ("POST", "/api/v1/workloads/w1/migrate")]


@pytest.mark.parametrize(("method", "path"), BODIED)
def test_malformed_json_is_a_400(e: Env, method: str, path: str) -> None:
    for raw in (b"{not json", b'{"name": "x",}', b"\xff\xfe", b"[" * 50_000):
        error = refused(e, 400, method, path, content=raw, headers={"content-type": "application/json"})
        assert error["error"] == "MalformedRequest"


@pytest.mark.parametrize(("method", "path"), BODIED)
def test_a_body_over_one_mib_is_a_413_before_anything_runs(e: Env, method: str, path: str) -> None:
    big = json.dumps({"name": "x", "labels": {"pad": "y" * BIG}}).encode()
    refused(e, 413, method, path, content=big, headers={"content-type": "application/json"})

    def chunks() -> Any:  # no Content-Length: counted as it comes
        for _ in range(3):
            yield b" " * (1 << 20)

    refused(e, 413, method, path, content=chunks(), headers={"content-type": "application/json"})


def test_an_action_without_a_body_is_refused_too_when_sent_a_huge_one(e: Env) -> None:
    refused(e, 413, "POST", "/api/v1/hosts/h1/approve", content=b"x" * BIG)
    refused(e, 413, "DELETE", "/api/v1/workloads/w1", role="operator", content=b"x" * BIG)
    assert "w1" in e.cluster.workloads()


@pytest.mark.parametrize(("path", "body", "field"), [
    ("/api/v1/hosts", {"name": "x", "bogus": 1}, "bogus"),
    ("/api/v1/hosts", {"name": "x", "capacity": {"cpu": "eight"}}, "capacity.cpu"),
    ("/api/v1/hosts", {"name": "x", "capacity": {"cpu": 1, "memory": 1.5}}, "capacity.memory"),
    ("/api/v1/hosts", {"name": "x", "fence_devices": [{"agent": "ipmi", "address": "a", "colour": 1}]},
     "fence_devices[0].colour"),
    ("/api/v1/hosts", {"name": "x\n"}, "name"),
    ("/api/v1/hosts", {"capacity": {"cpu": 1}}, "name"),
    ("/api/v1/hosts", {"name": "x", "labels": ["a"]}, "labels"),
    ("/api/v1/hosts", {"name": "x", "capacity": {"cpu": 2**60}}, "capacity.cpu"),
    ("/api/v1/tokens", {"name": "x", "role": "root"}, "role"),
    ("/api/v1/tokens", {"name": "x", "role": "viewer", "admin": True}, "admin"),
    ("/api/v1/tokens", {"name": "bad\nname", "role": "viewer"}, "name"),
    ("/api/v1/tokens/join", {"host": 3}, "host"),
    ("/api/v1/tokens/join", {"host": "../etc"}, "host"),
    ("/api/v1/hosts/h2/maintenance", {"stop_unmovable": "yes"}, "stop_unmovable"),
    ("/api/v1/hosts/h2/maintenance", {"drain": True}, "drain"),
    ("/api/v1/workloads/w1/stop", {"force": 1}, "force"),
    ("/api/v1/workloads/w1/migrate", {"target": "nowhere"}, "target"),
    ("/api/v1/workloads", {"name": "w", "flavor": "fake", "requests": {"cpu": -1}}, "requests.cpu"),
    ("/api/v1/workloads", {"name": "w", "flavor": "fake", "colour": "red"}, "colour"),
    ("/api/v1/workloads", {"name": "w", "flavor": "nosuch"}, "flavor"),
    ("/api/v1/workloads", {"name": "w", "flavor": "vm", "vm": {"vcpus": 2}}, "flavor"),
    ("/api/v1/workloads", {"name": "w", "vm": {}, "colour": 1}, "colour"),
    ("/api/v1/workloads", [1, 2], "<root>"),
])
def test_unknown_fields_and_wrong_types_are_a_422_naming_the_field(e: Env, path: str, body: Any, field: str) -> None:
    error = refused(e, 422, "POST", path, json=body)
    assert error["error"] in ("ValidationError", "UnknownFlavor") and error["field"] == field, error
    assert field.split(".")[-1].split("[")[0] in error["message"] or field == "<root>"


@pytest.mark.parametrize(("path", "body", "field"), [
    ("/api/v1/hosts/h1", {"name": "other"}, "name"),
    ("/api/v1/hosts/h1", {"state": "Up"}, "state"),
    ("/api/v1/hosts/h1", {"capacity": {"cpu": "x"}}, "capacity.cpu"),
    ("/api/v1/config", {"drain_parallel": "x"}, "drain_parallel"),
    ("/api/v1/config", {"policy": "evenly-distributed"}, "policy"),
    ("/api/v1/config", {"fencing": {"retries": -1}}, "fencing.retries"),
    ("/api/v1/config", {"nonsense": 1}, "nonsense"),
])
def test_updates_are_checked_whole(e: Env, path: str, body: Any, field: str) -> None:
    assert refused(e, 422, "PATCH", path, json=body)["field"] == field


def test_a_secret_in_a_refused_value_is_never_echoed(e: Env) -> None:
    device = {"agent": "ipmi", "address": "bmc", "password": "hunter2\n"}
    error = refused(e, 422, "POST", "/api/v1/hosts", json={"name": "x", "fence_devices": [device]})
    assert error["field"] == "fence_devices[0].password" and "hunter2" not in json.dumps(error)
    error = refused(e, 422, "POST", "/api/v1/hosts", json={"name": "x", "fence_devices": [{**device, "agent": 5}]})
    assert "hunter2" not in json.dumps(error)
    error = refused(e, 422, "POST", "/api/v1/hosts", json={"name": "x", "fence_devices": {"password": "hunter2"}})
    assert "hunter2" not in json.dumps(error)


def test_workloads_come_as_yaml_too_but_not_as_anything(e: Env) -> None:
    yaml_type = {"content-type": "application/yaml"}
    assert refused(e, 400, "POST", "/api/v1/workloads", role="operator", content=b"name: [unclosed",
                   headers=yaml_type)["error"] == "MalformedRequest"
    bomb = b"a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\nc: [*b, *b, *b, *b]\n"
    assert "aliases" in refused(e, 400, "POST", "/api/v1/workloads", role="operator", content=bomb,
                                headers=yaml_type)["message"]
    assert refused(e, 400, "POST", "/api/v1/workloads", role="operator", content=b"[" * 20_000 + b"]" * 20_000,
                   headers=yaml_type)["error"] == "MalformedRequest"
    assert refused(e, 415, "POST", "/api/v1/workloads", role="operator", content=b"name=w",
                   headers={"content-type": "application/x-www-form-urlencoded"})["error"] == "UnsupportedMediaType"
    assert refused(e, 422, "POST", "/api/v1/workloads", role="operator", content=b"name: y\nflavor: fake\nha: maybe\n",
                   headers=yaml_type)["field"] == "ha"
    answer = e.as_role("operator", "POST", "/api/v1/workloads", content=b"name: y\nflavor: fake\nrequests: {cpu: 1}\n",
                       headers=yaml_type)
    assert answer.status_code == 202 and answer.json()["workload"]["requests"] == {"cpu": 1, "memory": 0}


def test_conflicts_are_a_409_and_unknown_names_a_404(e: Env) -> None:
    assert refused(e, 409, "POST", "/api/v1/hosts", json={"name": "h1"})["error"] == "HostExists"
    assert refused(e, 409, "POST", "/api/v1/workloads", role="operator",
                   json={"name": "w1", "flavor": "fake"})["error"] == "WorkloadExists"
    assert refused(e, 409, "POST", "/api/v1/hosts/h1/approve")["error"] == "InvalidTransition"
    assert refused(e, 409, "POST", "/api/v1/hosts/h1/activate")["error"] == "InvalidTransition"
    assert refused(e, 409, "DELETE", "/api/v1/hosts/h1")["error"] in ("InvalidTransition", "HostBusy")
    assert refused(e, 409, "POST", "/api/v1/workloads/w1/start", role="operator")["error"] == "Conflict"
    assert refused(e, 409, "POST", "/api/v1/tokens/join", json={"host": "h1"})["error"] == "HostExists"
    for method, path in [("GET", "/api/v1/hosts/nope"), ("POST", "/api/v1/hosts/nope/approve"),
                         ("PATCH", "/api/v1/hosts/nope"), ("DELETE", "/api/v1/hosts/nope"),
                         ("GET", "/api/v1/workloads/nope"), ("POST", "/api/v1/workloads/nope/stop"),
                         ("GET", "/api/v1/operations/nope"), ("POST", f"/api/v1/operations/{'0' * 32}/cancel"),
                         ("DELETE", f"/api/v1/tokens/{'0' * 16}"), ("GET", "/api/v1/explain/nope"),
                         ("GET", "/api/v1/nothing-here")]:
        kwargs: dict[str, Any] = {"json": {}} if method == "PATCH" else {}
        assert refused(e, 404, method, path, **kwargs)["error"] in (
            "UnknownHost", "UnknownWorkload", "UnknownOperation", "UnknownToken", "NotFound"), path


JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner,
                                                                                max_size=4), max_leaves=12)
KEYS = st.sampled_from(["name", "capacity", "allocatable", "address", "labels", "location", "fence_devices",
                        "taints", "schedulable", "state", "facts", "flavor", "requests", "spec", "vm", "ha",
                        "priority", "affinity", "volumes", "tolerations", "cpu", "memory", "agent", "password"])
DOCUMENTS = st.dictionaries(KEYS | st.text(max_size=8), JSON | st.dictionaries(KEYS, JSON, max_size=4), max_size=6)


@pytest.fixture(scope="module")
def fuzzed() -> Env:
    return env()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(path=st.sampled_from(["/api/v1/hosts", "/api/v1/workloads", "/api/v1/join", "/api/v1/heartbeats/h1"]),
       document=DOCUMENTS | JSON)
def test_random_json_never_makes_the_server_fail(fuzzed: Env, path: str, document: Any) -> None:
    before = fuzzed.store.revision
    answer = fuzzed.as_role("admin", "POST", path, content=json.dumps(document).encode(),
                            headers={"content-type": "application/json"})
    assert answer.status_code < 500, answer.text
    if answer.status_code >= 400:
        assert fuzzed.store.revision == before
        assert set(answer.json()) == {"error", "message", "field"}
