"""The Kubernetes scheduler extender (issue 19, item 4), fed Pods and Nodes exactly as
kube-scheduler sends them: the kubernetes client's models serialised to the API's JSON,
wrapped in the extender/v1 structs as Go marshals them (every field, nil as null), in both
node-cache modes, over the HTTP app (Starlette's TestClient) and a real uvicorn."""

from __future__ import annotations

import json
import os
import signal
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import httpx
import pytest
from kubernetes.client import (
    V1Affinity,
    V1Container,
    V1NodeAffinity,
    V1NodeSelector,
    V1NodeSelectorRequirement,
    V1NodeSelectorTerm,
    V1ObjectMeta,
    V1Pod,
    V1PodSpec,
    V1PreferredSchedulingTerm,
    V1ResourceRequirements,
    V1Taint,
    V1Toleration,
)
from starlette.testclient import TestClient

from clustercore.adapters.kube import (
    UNKNOWN_NODE,
    Extender,
    ExtenderArgs,
    ExtenderServer,
    KubeApiBinder,
    create_app,
)
from tests.kube_support import Cluster, args, doc, node, pod

PORT = 23990
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(params=[False, True], ids=["nodes", "node-cache"])
def cluster(request: pytest.FixtureRequest) -> Cluster:
    return Cluster(request.param)


# --------------------------------------------------------------------------- filter


def test_filter_reasons_as_kube_scheduler_shows_them(cluster: Cluster) -> None:
    nodes = [
        node("ok"),
        node("small-cpu", cpu="250m"),
        node("small-mem", memory="512Mi"),
        node("small-both", cpu="100m", memory="100Mi"),
        node("full", pods="0"),
        node("gpu", taints=[V1Taint(key="gpu", value="nvidia", effect="NoSchedule")]),
        node("evicting", taints=[V1Taint(key="maint", value="", effect="NoExecute")]),
        node("soft", taints=[V1Taint(key="meh", value="x", effect="PreferNoSchedule")]),
        node("cordoned", unschedulable=True),
    ]
    passed, failed = cluster.filter(pod(), nodes)
    assert passed == ["ok", "soft"]
    assert failed == {
        "small-cpu": "Insufficient cpu",
        "small-mem": "Insufficient memory",
        "small-both": "Insufficient cpu, Insufficient memory",
        "full": "Too many pods",
        "gpu": "node(s) had untolerated taint {gpu: nvidia}",
        "evicting": "node(s) had untolerated taint {maint: }",
        "cordoned": "node(s) were unschedulable",
    }


def test_tolerations_and_extended_resources(cluster: Cluster) -> None:
    gpu = V1Taint(key="gpu", value="nvidia", effect="NoSchedule")
    nodes = [node("gpu", taints=[gpu], extra={"nvidia.com/gpu": "2"}), node("plain"),
             node("cordoned", unschedulable=True, taints=[V1Taint(key="node.kubernetes.io/unschedulable",
                                                                     effect="NoSchedule")])]
    exists_all = [V1Toleration(operator="Exists")]
    assert cluster.filter(pod(tolerations=exists_all), nodes)[0] == ["gpu", "plain", "cordoned"]
    wrong_value = [V1Toleration(key="gpu", operator="Equal", value="amd", effect="NoSchedule")]
    assert cluster.filter(pod(tolerations=wrong_value), nodes)[1]["gpu"] == "node(s) had untolerated taint " \
                                                                             "{gpu: nvidia}"
    wrong_effect = [V1Toleration(key="gpu", operator="Exists", effect="NoExecute")]
    assert "gpu" in cluster.filter(pod(tolerations=wrong_effect), nodes)[1]
    needs_gpu = doc(V1Pod(metadata=V1ObjectMeta(name="train", uid="u2"), spec=V1PodSpec(
        containers=[V1Container(name="c", resources=V1ResourceRequirements(requests={"nvidia.com/gpu": "1"}))],
        tolerations=[V1Toleration(key="gpu", operator="Equal", value="nvidia")])))
    passed, failed = cluster.filter(needs_gpu, nodes)
    assert passed == ["gpu"]
    # NodeUnschedulable runs before TaintToleration, as in kube-scheduler
    assert failed == {"plain": "Insufficient nvidia.com/gpu", "cordoned": "node(s) were unschedulable"}


def _affinity(*terms: V1NodeSelectorTerm, preferred: Any = None) -> V1Affinity:
    return V1Affinity(node_affinity=V1NodeAffinity(
        required_during_scheduling_ignored_during_execution=V1NodeSelector(node_selector_terms=list(terms))
        if terms else None, preferred_during_scheduling_ignored_during_execution=preferred))


def _req(key: str, operator: str, *values: str) -> V1NodeSelectorRequirement:
    return V1NodeSelectorRequirement(key=key, operator=operator, values=list(values) or None)


def test_node_affinity_and_selector(cluster: Cluster) -> None:
    nodes = [node("a1", labels={"zone": "a", "cores": "16", "ssd": "yes"}),
             node("a2", labels={"zone": "a", "cores": "4"}), node("b1", labels={"zone": "b", "cores": "32"}),
             node("c1", labels={"zone": "c", "cores": "x"})]
    reason = "node(s) didn't match Pod's node affinity/selector"

    def passes(**kw: Any) -> list[str]:
        passed, failed = cluster.filter(pod(**kw), nodes)
        assert set(failed.values()) <= {reason}
        return passed

    assert passes(node_selector={"zone": "a"}) == ["a1", "a2"]
    term = V1NodeSelectorTerm
    assert passes(affinity=_affinity(term(match_expressions=[_req("zone", "In", "a", "b")]))) == ["a1", "a2", "b1"]
    assert passes(affinity=_affinity(term(match_expressions=[_req("zone", "NotIn", "a")]))) == ["b1", "c1"]
    assert passes(affinity=_affinity(term(match_expressions=[_req("ssd", "Exists")]))) == ["a1"]
    assert passes(affinity=_affinity(term(match_expressions=[_req("ssd", "DoesNotExist")]))) == ["a2", "b1", "c1"]
    assert passes(affinity=_affinity(term(match_expressions=[_req("cores", "Gt", "8")]))) == ["a1", "b1"]
    assert passes(affinity=_affinity(term(match_expressions=[_req("cores", "Lt", "8")]))) == ["a2"]
    assert passes(affinity=_affinity(term(match_expressions=[_req("cores", "Gt", "16")]))) == ["b1"]  # strictly
    assert passes(affinity=_affinity(term(match_expressions=[_req("cores", "Lt", "4")]))) == []
    anded = term(match_expressions=[_req("zone", "In", "a"), _req("cores", "Gt", "8")])
    ored = term(match_fields=[_req("metadata.name", "In", "c1")])
    assert passes(affinity=_affinity(anded, ored)) == ["a1", "c1"]
    assert passes(affinity=_affinity(term())) == []  # an empty term matches nothing
    both = _affinity(term(match_expressions=[_req("zone", "In", "a", "b")]))
    assert passes(affinity=both, node_selector={"cores": "4"}) == ["a2"]
    passed, failed = cluster.filter(pod(node_name="b1"), nodes)
    assert passed == ["b1"] and set(failed.values()) == {"node(s) didn't match the requested node name"}


def test_unknown_nodes_in_cache_mode() -> None:
    cluster = Cluster(cache=True)
    cluster.client.put("/nodes", json={"items": [node("n1")]})
    result = cluster.client.post("/filter", json={"Pod": pod(), "Nodes": None, "NodeNames": ["n1", "n9"]}).json()
    assert result["NodeNames"] == ["n1"] and result["FailedNodes"] == {"n9": UNKNOWN_NODE}
    assert cluster.client.get("/nodes").json() == {"nodes": 1}


# --------------------------------------------------------------------------- prioritize, bind, preempt


def test_prioritize_scores_every_node_0_to_10(cluster: Cluster) -> None:
    prefer_ssd = [V1PreferredSchedulingTerm(weight=50, preference=V1NodeSelectorTerm(
        match_expressions=[_req("ssd", "In", "yes")]))]
    nodes = [node("big-ssd", cpu="16", memory="64Gi", labels={"ssd": "yes"}), node("big", cpu="16", memory="64Gi"),
             node("small", cpu="1", memory="2Gi"), node("soft", cpu="16", memory="64Gi", taints=[
                 V1Taint(key="meh", effect="PreferNoSchedule")])]
    result = cluster.call("prioritize", pod(affinity=_affinity(preferred=prefer_ssd)), nodes)
    assert [r["Host"] for r in result] == ["big-ssd", "big", "small", "soft"]
    assert all(set(r) == {"Host", "Score"} and 0 <= r["Score"] <= 10 for r in result)
    # preferred affinity (factor 2), no PreferNoSchedule taint (1), least allocated (1), each
    # min-max normalised over these nodes: big-ssd best on all three; big misses the
    # preference; soft has only room, small only no taint: (0+1+1)/4 and (0+0+1)/4 of 10
    assert {r["Host"]: r["Score"] for r in result} == {"big-ssd": 10, "big": 5, "soft": 2, "small": 2}


class _ApiServer(BaseHTTPRequestHandler):
    """Stands in for the Kubernetes API's pods/binding subresource: records what it is sent."""

    posted: ClassVar[list[tuple[str, dict[str, Any], str]]] = []

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.posted.append((self.path, body, self.headers.get("Authorization", "")))
        missing = body["metadata"]["name"] == "ghost"
        self.send_response(404 if missing else 201)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(json.dumps({"kind": "Status", "message": 'pods "ghost" not found'} if missing
                                    else {"kind": "Status", "status": "Success"}).encode())

    def log_message(self, *a: Any) -> None:
        pass


@pytest.fixture
def api_server() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", PORT), _ApiServer)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _ApiServer.posted = []
    try:
        yield f"http://127.0.0.1:{PORT}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_bind_creates_the_binding(api_server: str) -> None:
    binder = KubeApiBinder(api_server, token="secret-token")
    client = TestClient(create_app(Extender([node("n1")], binder=binder)))
    try:
        bind = {"PodName": "web", "PodNamespace": "shop", "PodUID": "uid-web", "Node": "n1"}
        assert client.post("/bind", json=bind).json() == {"Error": ""}
        path, body, auth = _ApiServer.posted[0]
        assert path == "/api/v1/namespaces/shop/pods/web/binding" and auth == "Bearer secret-token"
        assert body == {"apiVersion": "v1", "kind": "Binding", "metadata": {"name": "web", "namespace": "shop",
                        "uid": "uid-web"}, "target": {"apiVersion": "v1", "kind": "Node", "name": "n1"}}
        refused = client.post("/bind", json={**bind, "PodName": "ghost"}).json()["Error"]
        assert "404" in refused and 'pods "ghost" not found' in refused
    finally:
        binder.close()
    unbound = TestClient(create_app(Extender())).post("/bind", json=bind).json()["Error"]
    assert "does not bind" in unbound


def test_preempt_keeps_victims_where_the_pod_fits(cluster: Cluster) -> None:
    nodes = [node("n1"), node("tainted", taints=[V1Taint(key="gpu", value="x", effect="NoSchedule")]),
             node("tiny", cpu="100m")]
    victim = pod("old", uid="uid-old")
    if cluster.cache:
        cluster.client.put("/nodes", json={"items": nodes})
        body = {"Pod": pod(), "NodeNameToVictims": None, "NodeNameToMetaVictims": {
            n["metadata"]["name"]: {"Pods": [{"UID": "uid-old"}], "NumPDBViolations": 1} for n in nodes}}
    else:
        body = {"Pod": pod(), "NodeNameToMetaVictims": None, "NodeNameToVictims": {
            n["metadata"]["name"]: {"Pods": [victim], "NumPDBViolations": 1} for n in nodes}}
    result = cluster.client.post("/preempt", json=body).json()
    if cluster.cache:  # it knows the nodes: only n1 can take the pod once the victims are gone
        assert result == {"NodeNameToMetaVictims": {"n1": {"Pods": [{"UID": "uid-old"}], "NumPDBViolations": 1}}}
    else:  # no node cache: it cannot judge the nodes and keeps kube-scheduler's victims
        assert set(result["NodeNameToMetaVictims"]) == {"n1", "tainted", "tiny"}


# --------------------------------------------------------------------------- served for real


def test_served_by_uvicorn_over_tls(tmp_path: Path) -> None:
    from clustercore.api.tls import ensure_certificate

    cert, key = ensure_certificate(tmp_path, "127.0.0.1")
    with ExtenderServer(Extender([node("n1"), node("n2", cpu="1m")]), f"127.0.0.1:{PORT}", cert, key) as server:
        assert server.url == f"https://127.0.0.1:{PORT}"
        with httpx.Client(base_url=server.url, verify=ssl.create_default_context(cafile=str(cert))) as client:
            result = client.post("/filter", json={"Pod": pod(), "Nodes": None, "NodeNames": ["n1", "n2"]}).json()
            assert result["NodeNames"] == ["n1"] and result["FailedAndUnresolvableNodes"] == {"n2": "Insufficient cpu"}


def test_cli_serves_the_extender_until_sigterm(tmp_path: Path) -> None:
    nodes = tmp_path / "nodes.json"
    nodes.write_text(json.dumps({"apiVersion": "v1", "kind": "List", "items": [node("n1"), node("n2")]}))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-m", "clustercore.cli", "extender", "--listen", f"127.0.0.1:{PORT}",
                             "--nodes", str(nodes)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == f"node cache: 2 nodes from {nodes}"
        assert proc.stdout.readline().strip() == f"extender at http://127.0.0.1:{PORT}"
        result = httpx.post(f"http://127.0.0.1:{PORT}/prioritize", json={"Pod": pod(), "NodeNames": ["n1", "n2"]})
        assert result.json() == [{"Host": "n1", "Score": 0}, {"Host": "n2", "Score": 0}]  # alike: nothing to prefer
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
    bad = subprocess.run([sys.executable, "-m", "clustercore.cli", "extender", "--cert", "x.pem"],
                         capture_output=True, text=True, env=env, timeout=30)
    assert bad.returncode == 2 and "--cert and --key go together" in bad.stderr, bad.stderr


def test_node_documents_are_read_again_only_when_their_resource_version_changes() -> None:
    extender = Extender()
    first = node("n1")
    first["metadata"]["resourceVersion"] = "7"
    assert extender.filter(ExtenderArgs.decode(args(pod(), [first], cache=False))).nodes == (first,)
    shrunk = node("n1", cpu="100m")
    shrunk["metadata"]["resourceVersion"] = "8"  # the API server's new version of the node
    assert extender.filter(ExtenderArgs.decode(args(pod(), [shrunk], cache=False))).unresolvable == \
        {"n1": "Insufficient cpu"}
    shrunk["metadata"]["resourceVersion"] = "7"  # an old version's number: what was read for it holds
    assert extender.filter(ExtenderArgs.decode(args(pod(), [shrunk], cache=False))).nodes == (shrunk,)
