"""The API's role matrix (issue 16): every route, built from the app's own routes, called
with no token, a viewer, an operator and an admin token (and, where it is the way in, a
join token or a host's credential): exactly the intended callers succeed, the others get
401/403 with nothing written; a revoked token fails everywhere; every successful change
is an audit event naming the caller, and operations carry who asked."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from clustercore import HostState, auth
from clustercore.api.app import AUTH_KEY, create_app

from .api_support import ROLES, Env, env

Call = tuple[str, dict[str, Any]]  # path, request keywords
Setup = Callable[[Env], Call]

# What the contract says each route needs (docs/api.md); the app's routes must be exactly these.
CONTRACT: dict[tuple[str, str], str] = {
    ("GET", "/api/v1/hosts"): "viewer",
    ("GET", "/api/v1/hosts/{name}"): "viewer",
    ("POST", "/api/v1/hosts"): "admin",
    ("PATCH", "/api/v1/hosts/{name}"): "admin",
    ("POST", "/api/v1/hosts/{name}/approve"): "admin",
    ("POST", "/api/v1/hosts/{name}/activate"): "admin",
    ("POST", "/api/v1/hosts/{name}/reinstall"): "admin",
    ("POST", "/api/v1/hosts/{name}/confirm-down"): "admin",
    ("POST", "/api/v1/hosts/{name}/maintenance"): "operator",
    ("DELETE", "/api/v1/hosts/{name}/maintenance"): "operator",
    ("DELETE", "/api/v1/hosts/{name}"): "admin",
    ("GET", "/api/v1/workloads"): "viewer",
    ("GET", "/api/v1/workloads/{name}"): "viewer",
    ("POST", "/api/v1/workloads"): "operator",
    ("POST", "/api/v1/workloads/{name}/start"): "operator",
    ("POST", "/api/v1/workloads/{name}/stop"): "operator",
    ("POST", "/api/v1/workloads/{name}/migrate"): "operator",
    ("DELETE", "/api/v1/workloads/{name}"): "operator",
    ("GET", "/api/v1/placements"): "viewer",
    ("GET", "/api/v1/events"): "viewer",
    ("GET", "/api/v1/events/stream"): "viewer",
    ("GET", "/api/v1/explain/{workload}"): "viewer",
    ("GET", "/api/v1/capacity"): "viewer",
    ("GET", "/api/v1/rebalance"): "viewer",
    ("GET", "/api/v1/config"): "viewer",
    ("PATCH", "/api/v1/config"): "admin",
    ("GET", "/api/v1/operations"): "viewer",
    ("GET", "/api/v1/operations/{op_id}"): "viewer",
    ("POST", "/api/v1/operations/{op_id}/cancel"): "operator",
    ("GET", "/api/v1/operations/{op_id}/wait"): "viewer",
    ("GET", "/api/v1/tokens"): "admin",
    ("POST", "/api/v1/tokens"): "admin",
    ("DELETE", "/api/v1/tokens/{token_id}"): "admin",
    ("POST", "/api/v1/tokens/join"): "admin",
    ("POST", "/api/v1/join"): "join-token",
    ("POST", "/api/v1/heartbeats/{host}"): "host-credential",
    ("GET", "/api/v1/whoami"): "viewer",
    ("GET", "/metrics"): "viewer",
}


def _maintenance_op(e: Env) -> str:
    return e.cluster.request("maintenance", "h2", by="setup").id


def _in_maintenance(e: Env) -> None:
    e.cluster.start_maintenance("h3")
    e.tick(2)
    assert e.cluster.host("h3").state is HostState.MAINTENANCE


def _pending(e: Env) -> None:
    e.cluster.configure({"approval_required": True})
    e.cluster.register_host({"name": "p1", "capacity": {"cpu": 1, "memory": 1}})


def _non_responsive(e: Env) -> None:
    e.tick(8, silent=["h3"])
    assert e.cluster.host("h3").state is HostState.NON_RESPONSIVE


def _stopped(e: Env) -> None:
    e.cluster.stop("w1")


def _revocable(e: Env) -> str:
    token, _ = auth.issue_token(e.store, "victim", "viewer", e.clock.now())
    return token.id


# How to make each route succeed (setup, then the call); GETs without setup need none.
SETUPS: dict[tuple[str, str], Setup] = {
    ("GET", "/api/v1/hosts/{name}"): lambda e: ("/api/v1/hosts/h1", {}),
    ("POST", "/api/v1/hosts"): lambda e: ("/api/v1/hosts", {"json": {"name": "h4", "capacity": {"cpu": 2}}}),
    ("PATCH", "/api/v1/hosts/{name}"): lambda e: ("/api/v1/hosts/h1", {"json": {"labels": {"rack": "r1"}}}),
    ("POST", "/api/v1/hosts/{name}/approve"): lambda e: (_pending(e), ("/api/v1/hosts/p1/approve", {}))[1],
    ("POST", "/api/v1/hosts/{name}/activate"): lambda e: (_in_maintenance(e), ("/api/v1/hosts/h3/activate", {}))[1],
    ("POST", "/api/v1/hosts/{name}/reinstall"): lambda e: (_in_maintenance(e),
                                                          ("/api/v1/hosts/h3/reinstall", {}))[1],
    ("POST", "/api/v1/hosts/{name}/confirm-down"): lambda e: (_non_responsive(e),
                                                             ("/api/v1/hosts/h3/confirm-down", {}))[1],
    ("POST", "/api/v1/hosts/{name}/maintenance"): lambda e: ("/api/v1/hosts/h2/maintenance",
                                                            {"json": {"stop_unmovable": True}}),
    ("DELETE", "/api/v1/hosts/{name}/maintenance"): lambda e: (e.cluster.start_maintenance("h1"),
                                                              ("/api/v1/hosts/h1/maintenance", {}))[1],
    ("DELETE", "/api/v1/hosts/{name}"): lambda e: (_in_maintenance(e), ("/api/v1/hosts/h3", {}))[1],
    ("GET", "/api/v1/workloads/{name}"): lambda e: ("/api/v1/workloads/w1", {}),
    ("POST", "/api/v1/workloads"): lambda e: ("/api/v1/workloads", {"json": {
        "name": "w9", "flavor": "fake", "requests": {"cpu": 1, "memory": 32}}}),
    ("POST", "/api/v1/workloads/{name}/start"): lambda e: (_stopped(e), ("/api/v1/workloads/w1/start", {}))[1],
    ("POST", "/api/v1/workloads/{name}/stop"): lambda e: ("/api/v1/workloads/w1/stop", {"json": {"force": True}}),
    ("POST", "/api/v1/workloads/{name}/migrate"): lambda e: ("/api/v1/workloads/w1/migrate",
                                                            {"json": {"target": "h2"}}),
    ("DELETE", "/api/v1/workloads/{name}"): lambda e: ("/api/v1/workloads/w1", {}),
    ("GET", "/api/v1/explain/{workload}"): lambda e: ("/api/v1/explain/w1", {"params": {"host": "h2"}}),
    ("PATCH", "/api/v1/config"): lambda e: ("/api/v1/config", {"json": {"drain_parallel": 3}}),
    ("GET", "/api/v1/operations/{op_id}"): lambda e: (f"/api/v1/operations/{_maintenance_op(e)}", {}),
    ("POST", "/api/v1/operations/{op_id}/cancel"): lambda e: (f"/api/v1/operations/{_maintenance_op(e)}/cancel", {}),
    ("GET", "/api/v1/operations/{op_id}/wait"): lambda e: (f"/api/v1/operations/{_maintenance_op(e)}/wait",
                                                          {"params": {"timeout": 0}}),
    ("POST", "/api/v1/tokens"): lambda e: ("/api/v1/tokens", {"json": {"name": "carol", "role": "operator"}}),
    ("DELETE", "/api/v1/tokens/{token_id}"): lambda e: (f"/api/v1/tokens/{_revocable(e)}", {}),
    ("POST", "/api/v1/tokens/join"): lambda e: ("/api/v1/tokens/join", {"json": {"host": "n1"}}),
    ("POST", "/api/v1/join"): lambda e: ("/api/v1/join", {"json": {"name": "n1", "capacity": {"cpu": 4}}}),
    ("POST", "/api/v1/heartbeats/{host}"): lambda e: ("/api/v1/heartbeats/h1", {"json": {"boot_id": "b1"}}),
}
STREAMING = {("GET", "/api/v1/events/stream")}  # never ends: its success is checked over a real server


def routes() -> dict[tuple[str, str], str]:
    """Every route of the app (as its OpenAPI document, made from its routes, lists them)
    with what admits it."""
    document = create_app(env(()).cluster).openapi()
    return {(method.upper(), path): operation[AUTH_KEY] for path, item in document["paths"].items()
            for method, operation in item.items()}


def test_every_route_is_in_the_contract_with_the_role_it_needs() -> None:
    assert routes() == CONTRACT


def _credentials(e: Env, needed: str) -> dict[str, str | None]:
    """Every caller tried on a route needing ``needed``: none, each role, and the join token
    or host credential where that is the way in."""
    callers: dict[str, str | None] = {"none": None, **e.tokens}
    if needed == "join-token":
        callers["join-token"] = auth.issue_join_token(e.store, "n1", e.clock.now(), by="admin")[1]
    if needed == "host-credential":
        callers["host-credential"] = e.cluster.credentials["h1"]
    return callers


def _allowed(needed: str, caller: str) -> bool:
    if needed in ROLES:
        return caller in ROLES and ROLES.index(caller) >= ROLES.index(needed)
    return caller == needed


@pytest.mark.parametrize("key", sorted(CONTRACT), ids=lambda k: f"{k[0]} {k[1]}")
def test_exactly_the_intended_callers_succeed_and_the_changes_are_audited(key: tuple[str, str]) -> None:
    method, template = key
    needed = CONTRACT[key]
    refused = env()
    path, kwargs = SETUPS.get(key, lambda e: (template, {}))(refused)
    callers = _credentials(refused, needed)
    for caller, secret in callers.items():
        if _allowed(needed, caller):
            continue
        before = refused.store.revision
        answer = refused.call(method, path, secret, **kwargs)
        assert answer.status_code == (401 if caller in ("none", "join-token", "host-credential")
                                      or needed in ("join-token", "host-credential") else 403), (caller, answer.text)
        assert answer.json()["error"] in ("Unauthorized", "Forbidden") and answer.json()["message"]
        assert refused.store.revision == before, f"{caller}: a refused call wrote to the store"
    if key in STREAMING:
        return
    for caller in [c for c in callers if _allowed(needed, c)]:
        e = env()
        path, kwargs = SETUPS.get(key, lambda e: (template, {}))(e)
        secret = _credentials(e, needed)[caller]
        answer = e.call(method, path, secret, **kwargs)
        assert answer.status_code < 300, (caller, answer.status_code, answer.text)
        if method != "GET" and needed in ROLES:
            audit = e.cluster.query_events(kind="audit")
            assert audit and audit[-1].reason.endswith(f"by {caller} ({caller})"), audit
            assert method in audit[-1].reason and path.split("?")[0] in audit[-1].reason
        if answer.status_code == 202:
            ops = answer.json().get("operation") or answer.json()
            assert ops["by"] == caller and ops["state"] == "Pending"


def test_a_revoked_token_fails_everywhere_at_once() -> None:
    e = env()
    assert e.as_role("admin", "GET", "/api/v1/whoami").json() == {
        "name": "admin", "role": "admin", "id": e.tokens["admin"].split("_")[1]}
    victim_id = e.tokens["admin"].split("_")[1]
    other, secret = auth.issue_token(e.store, "other-admin", "admin", e.clock.now())
    assert e.call("DELETE", f"/api/v1/tokens/{victim_id}", secret).status_code == 204
    for method, template in CONTRACT:
        path = template.replace("{name}", "h1").replace("{workload}", "w1").replace("{op_id}", "0" * 32) \
            .replace("{token_id}", other.id).replace("{host}", "h1")
        answer = e.as_role("admin", method, path, json={})
        assert answer.status_code == 401, (method, path, answer.text)
        assert "revoked" in answer.json()["message"] or CONTRACT[(method, template)] in ("join-token",
                                                                                       "host-credential")
    assert e.call("GET", "/api/v1/whoami", secret).json()["name"] == "other-admin"
    listed = {t["id"]: t for t in e.call("GET", "/api/v1/tokens", secret).json()["tokens"]}
    assert listed[victim_id]["revoked"] is not None and "digest" not in listed[victim_id]
    assert "secret" not in str(listed)


def test_garbage_tokens_are_refused_alike() -> None:
    e = env(())
    for secret in ["", "cc_", "cc_zz_x", f"cc_{'0' * 16}_nope", e.tokens["admin"] + "x", "Basic abc", "ccj_x_y"]:
        answer = e.call("GET", "/api/v1/hosts", secret)
        assert answer.status_code == 401 and answer.headers["www-authenticate"] == "Bearer"
    assert e.client.get("/api/v1/hosts", headers={"Authorization": "Basic abc"}).status_code == 401
