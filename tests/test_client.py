"""The API client's own behaviour, against httpx's MockTransport: the request each method
sends, errors carrying status/kind/message/field, server-sent events, ``wait`` and its
progress callback, fingerprints. (Against the real app: tests/test_cli_api.py.)"""

from __future__ import annotations

import json
import ssl
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from clustercore.client import ApiError, Client, fingerprint, same_fingerprint, server_certificate, sse_data
from clustercore.pinning import PinError

Handler = Callable[[httpx.Request], httpx.Response]


def client(handler: Handler, token: str | None = "cc_x_secret") -> Client:
    return Client("https://manager:8443/", token, transport=httpx.MockTransport(handler))


def recorder(answer: Any = None, status: int = 200) -> tuple[list[httpx.Request], Client]:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(status, json=answer) if answer is not None else httpx.Response(204)
    return seen, client(handler)


@pytest.mark.parametrize(("call", "method", "path", "body"), [
    (lambda c: c.hosts(), "GET", "/api/v1/hosts", None),
    (lambda c: c.host("a/../b"), "GET", "/api/v1/hosts/a%2F..%2Fb", None),
    (lambda c: c.add_host({"name": "n1"}), "POST", "/api/v1/hosts", {"name": "n1"}),
    (lambda c: c.update_host("n1", {"labels": {}}), "PATCH", "/api/v1/hosts/n1", {"labels": {}}),
    (lambda c: c.approve_host("n1"), "POST", "/api/v1/hosts/n1/approve", None),
    (lambda c: c.activate_host("n1"), "POST", "/api/v1/hosts/n1/activate", None),
    (lambda c: c.reinstall_host("n1"), "POST", "/api/v1/hosts/n1/reinstall", None),
    (lambda c: c.confirm_down("n1"), "POST", "/api/v1/hosts/n1/confirm-down", None),
    (lambda c: c.start_maintenance("n1", True), "POST", "/api/v1/hosts/n1/maintenance", {"stop_unmovable": True}),
    (lambda c: c.cancel_maintenance("n1"), "DELETE", "/api/v1/hosts/n1/maintenance", None),
    (lambda c: c.remove_host("n1"), "DELETE", "/api/v1/hosts/n1", None),
    (lambda c: c.workloads(), "GET", "/api/v1/workloads", None),
    (lambda c: c.workload("w"), "GET", "/api/v1/workloads/w", None),
    (lambda c: c.create_workload({"name": "w"}), "POST", "/api/v1/workloads", {"name": "w"}),
    (lambda c: c.start_workload("w"), "POST", "/api/v1/workloads/w/start", None),
    (lambda c: c.stop_workload("w", True), "POST", "/api/v1/workloads/w/stop", {"force": True}),
    (lambda c: c.migrate_workload("w", "n2"), "POST", "/api/v1/workloads/w/migrate", {"target": "n2"}),
    (lambda c: c.migrate_workload("w"), "POST", "/api/v1/workloads/w/migrate", {}),
    (lambda c: c.delete_workload("w"), "DELETE", "/api/v1/workloads/w", None),
    (lambda c: c.placements(), "GET", "/api/v1/placements", None),
    (lambda c: c.events("host/n1", "maintenance", 5.0, 10), "GET",
     "/api/v1/events?subject=host%2Fn1&kind=maintenance&since=5.0&limit=10", None),
    (lambda c: c.events(), "GET", "/api/v1/events", None),
    (lambda c: c.explain("w", "n1"), "GET", "/api/v1/explain/w?host=n1", None),
    (lambda c: c.capacity(), "GET", "/api/v1/capacity", None),
    (lambda c: c.config(), "GET", "/api/v1/config", None),
    (lambda c: c.configure({"drain_parallel": 3}), "PATCH", "/api/v1/config", {"drain_parallel": 3}),
    (lambda c: c.operations(), "GET", "/api/v1/operations", None),
    (lambda c: c.operation("ab"), "GET", "/api/v1/operations/ab", None),
    (lambda c: c.cancel_operation("ab"), "POST", "/api/v1/operations/ab/cancel", None),
    (lambda c: c.wait_operation("ab", 2.0), "GET", "/api/v1/operations/ab/wait?timeout=2.0", None),
    (lambda c: c.tokens(), "GET", "/api/v1/tokens", None),
    (lambda c: c.create_token("ann", "viewer"), "POST", "/api/v1/tokens", {"name": "ann", "role": "viewer"}),
    (lambda c: c.revoke_token("t1"), "DELETE", "/api/v1/tokens/t1", None),
    (lambda c: c.create_join_token("n3"), "POST", "/api/v1/tokens/join", {"host": "n3"}),
    (lambda c: c.join({"name": "n3"}), "POST", "/api/v1/join", {"name": "n3"}),
    (lambda c: c.heartbeat("n3", {"kdump": False}), "POST", "/api/v1/heartbeats/n3", {"kdump": False}),
    (lambda c: c.whoami(), "GET", "/api/v1/whoami", None),
])
def test_each_method_sends_its_request(call: Callable[[Client], object], method: str, path: str,
                                       body: object) -> None:
    listing = path.split("?")[0].rsplit("/", 1)[-1] in ("hosts", "workloads", "placements", "events", "operations",
                                                          "tokens") or "/explain/" in path
    seen, c = recorder([] if listing else {"ok": True})
    call(c)
    (request,) = seen
    assert request.method == method
    assert request.url.raw_path.decode() == path
    assert request.headers["authorization"] == "Bearer cc_x_secret"
    assert (json.loads(request.content) if request.content else None) == body


def test_no_token_sends_no_authorization() -> None:
    seen: list[httpx.Request] = []
    client(lambda r: (seen.append(r), httpx.Response(200, json={}))[1], token=None).whoami()
    assert "authorization" not in seen[0].headers


def test_listings_take_a_list_or_an_object_holding_one() -> None:
    _, c = recorder({"hosts": [{"name": "n1"}]})
    assert c.hosts() == [{"name": "n1"}]
    _, c = recorder({"nothing": 1})
    with pytest.raises(ApiError, match="expected a list of hosts") as info:
        c.hosts()
    assert info.value.kind == "protocol"


def test_errors_carry_status_kind_message_and_field() -> None:
    body = {"error": "ValidationError", "message": "invalid vm: field 'memory.size': must be >= 1 (got 0)",
            "field": "vm.memory.size"}
    _, c = recorder(body, 422)
    with pytest.raises(ApiError) as info:
        c.create_workload({"name": "w"})
    e = info.value
    assert (e.status, e.kind, e.field) == (422, "ValidationError", "vm.memory.size")
    assert str(e) == body["message"] + " (field 'vm.memory.size')"
    _, c = recorder({"error": "UnknownHost", "message": "no host 'x'"}, 404)
    with pytest.raises(ApiError, match=r"^no host 'x'$") as info:
        c.host("x")
    assert (info.value.status, info.value.field) == (404, None)
    _, c = recorder({"detail": "Not Found"}, 404)
    with pytest.raises(ApiError, match="404: Not Found"):
        c.host("x")
    c = client(lambda r: httpx.Response(502, text="<html>bad\ngateway</html>"))
    with pytest.raises(ApiError, match="502: <html>bad gateway</html>") as info:
        c.hosts()
    assert info.value.kind == "error"


def test_an_answer_that_is_not_json_is_a_protocol_error() -> None:
    c = client(lambda r: httpx.Response(200, text="hello"))
    with pytest.raises(ApiError, match="not JSON") as info:
        c.whoami()
    assert info.value.kind == "protocol"


def test_no_answer_is_status_zero() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)
    with pytest.raises(ApiError, match="https://manager:8443: connection refused") as info:
        client(refuse).hosts()
    assert (info.value.status, info.value.kind) == (0, "unreachable")

    def slow(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out", request=request)
    with pytest.raises(ApiError, match="no answer within 30 s"):
        client(slow).hosts()


def test_server_sent_events() -> None:
    lines = [": keepalive", "", "id: 1", "data: {\"kind\": \"a\"}", "", "event: x", "data: {\"kind\":",
             "data:  \"b\"}", "", "data: [1]", "", "retry: 5"]
    assert list(sse_data(iter(lines))) == [{"kind": "a"}, {"kind": "b"}]
    with pytest.raises(ApiError, match="not JSON"):
        list(sse_data(iter(["data: {", ""])))

    def stream(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/api/v1/events/stream" and request.url.params["kind"] == "placed"
        return httpx.Response(200, content=b"data: {\"n\": 1}\n\ndata: {\"n\": 2}\n\n",
                              headers={"content-type": "text/event-stream"})
    assert list(client(stream).stream_events(kind="placed")) == [{"n": 1}, {"n": 2}]
    refused = client(lambda r: httpx.Response(403, json={"error": "Forbidden", "message": "viewer at least"}))
    with pytest.raises(ApiError, match="viewer at least") as info:
        list(refused.stream_events())
    assert info.value.status == 403


def test_wait_calls_progress_with_each_state_until_done() -> None:
    states = iter([{"id": "ab", "state": "Pending", "progress": 0.0},
                   {"id": "ab", "state": "Running", "progress": 50.0, "step": "migrating w1"},
                   {"id": "ab", "state": "Succeeded", "progress": 100.0}])
    waits: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/wait"):
            waits.append(request.url.params["timeout"])
        return httpx.Response(200, json=next(states))
    seen: list[float] = []
    final = client(handler).wait("ab", progress=lambda op: seen.append(op["progress"]), poll=0.5)
    assert final["state"] == "Succeeded" and seen == [0.0, 50.0, 100.0] and waits == ["0.5", "0.5"]


def test_wait_gives_up_after_its_timeout() -> None:
    op = {"id": "ab", "state": "Running", "progress": 10.0}
    final = client(lambda r: httpx.Response(200, json=op)).wait("ab", timeout=0.05, poll=0.01)
    assert final["state"] == "Running"


def test_fingerprints() -> None:
    pem = ssl.DER_cert_to_PEM_cert(b"\x30\x03\x02\x01\x01")  # any DER bytes: the digest is of them
    fp = fingerprint(pem)
    assert len(fp) == 95 and fp.count(":") == 31 and fp == fp.upper()
    assert same_fingerprint(fp, fp.lower().replace(":", ""))
    assert not same_fingerprint(fp, fp[:-2] + "00") and not same_fingerprint("", "")
    with pytest.raises(PinError, match="not an https:// URL"):
        server_certificate("http://manager:8443")
