"""The Kubernetes scheduler extender's input (issue 19, item 4): Go's case-insensitive
keys, quantities and pod requests as kube-scheduler computes them, bad requests (a 4xx with
a message, never a 200), and properties over random pods and nodes."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kubernetes.client import V1Container, V1ResourceRequirements, V1Taint, V1Toleration
from starlette.testclient import TestClient

from clustercore.adapters.kube import (
    Extender,
    ExtenderArgs,
    ExtenderFilterResult,
    HostPriorityList,
    create_app,
    pod_requests,
    quantity,
)
from tests.kube_support import args, node, pod

# --------------------------------------------------------------------------- requests and quantities


def test_quantities_and_pod_requests() -> None:
    assert [quantity("t", "q", q, milli=True) for q in ("500m", "1", "0.1", "2.5", 1, "1e3", "100u")] == \
           [500, 1000, 100, 2500, 1000, 1000000, 1]
    assert [quantity("t", "q", q) for q in ("128Mi", "1Gi", "1G", "1k", "1E", "0.5Ki", "1.5")] == \
           [128 * 2**20, 2**30, 10**9, 1000, 10**18, 512, 2]
    sidecar = V1Container(name="sidecar", restart_policy="Always",
                          resources=V1ResourceRequirements(requests={"cpu": "100m"}))
    migrate = V1Container(name="migrate", resources=V1ResourceRequirements(requests={"cpu": "2", "memory": "512Mi"}))
    spec = pod(cpu="1", memory="1Gi", overhead={"cpu": "250m"}, init=[sidecar, migrate])["spec"]
    # containers 1 CPU + sidecar 100m = 1.1 < init 2 + sidecar 100m = 2.1; plus overhead 250m
    assert pod_requests("Pod", spec) == {"cpu": 2350, "memory": 2**30, "pods": 1}


@given(st.none() | st.lists(st.text(max_size=12), max_size=10),
       st.dictionaries(st.text(max_size=12), st.text(max_size=8)),
       st.dictionaries(st.text(max_size=12), st.sampled_from(["Insufficient cpu", 'odd "reason"\n'])), st.text())
def test_filter_result_json_is_jsons(names: list[str] | None, failed: dict[str, str], unresolvable: dict[str, str],
                                     error: str) -> None:
    result = ExtenderFilterResult(node_names=None if names is None else tuple(names), failed=failed,
                                  unresolvable=unresolvable, error=error)
    assert json.loads(result.to_json()) == result.encode()
    nodes = ExtenderFilterResult(nodes=({"metadata": {"name": "n1"}},))
    assert json.loads(nodes.to_json()) == nodes.encode()


@given(st.lists(st.tuples(st.text(max_size=12), st.integers(0, 10)), max_size=20))
def test_priorities_json_is_jsons(pairs: list[tuple[str, int]]) -> None:
    scores = HostPriorityList(tuple(h for h, _ in pairs), tuple(s for _, s in pairs))
    assert json.loads(scores.to_json()) == scores.encode() == [{"Host": h, "Score": s} for h, s in pairs]
    with pytest.raises(ValueError, match=r"outside 0\.\.10"):
        HostPriorityList(("n1",), (11,))


# --------------------------------------------------------------------------- bad requests


@pytest.mark.parametrize(("body", "message"), [
    (b"{not json", "not JSON"),
    (b"\xff\xfe", "not JSON"),
    (b"[]", "must be an object"),
    (b'{"Pod": {"spec": {"overhead": {"cpu": NaN}}}, "NodeNames": []}', "NaN is not JSON"),
    (b'{"Nodes": null, "NodeNames": ["n1"]}', "'Pod': is required"),
    (b'{"Pod": 5, "NodeNames": []}', "'Pod': must be an object"),
    (b'{"Pod": {}, "NodeNames": "n1"}', "'NodeNames': must be an array"),
    (b'{"Pod": {}, "NodeNames": [1]}', "'NodeNames[0]': must be a string"),
    (b'{"Pod": {}, "Nodes": null, "NodeNames": null}', "one of Nodes"),
    (b'{"Pod": {}, "Nodes": {"items": [{"metadata": {"name": "n1"}, "status": {"allocatable": {"cpu": "lots"}}}]}}',
     "not a quantity"),
    (b'{"Pod": {"spec": {"containers": [{"resources": {"requests": {"memory": "-1Gi"}}}]}}, "NodeNames": []}',
     "between 0 and 2^62"),
    (b'{"Pod": {"spec": {"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": '
     b'{"nodeSelectorTerms": [{"matchExpressions": [{"key": "a", "operator": "Near"}]}]}}}}}, "NodeNames": []}',
     "must be one of"),
])
def test_bad_requests_get_400_with_a_message(body: bytes, message: str) -> None:
    client = TestClient(create_app(Extender()))
    for verb in ("filter", "prioritize"):
        response = client.post(f"/{verb}", content=body, headers={"Content-Type": "application/json"})
        assert response.status_code == 400, response.text
        assert message in response.json()["error"]


def test_other_bad_requests() -> None:
    client = TestClient(create_app(Extender(), max_body=10_000))
    huge = json.dumps(args(pod(), [node(f"n{i}") for i in range(100)], cache=False)).encode()
    response = client.post("/filter", content=huge)
    assert response.status_code == 413 and "over 10000 bytes" in response.json()["error"]
    streamed = client.post("/filter", content=iter([huge[:6000], huge[6000:]]))  # chunked: no Content-Length
    assert streamed.status_code == 413
    assert client.get("/filter").status_code == 405
    for bad_bind in ({"PodName": "web", "Node": ""}, {"PodName": "../../nodes/n1", "Node": "n1"},
                     {"PodName": "web", "PodNamespace": "a/b", "Node": "n1"},
                     {"PodName": "web", "Node": "n1", "PodUID": "x?y"}, {"PodName": "Web", "Node": "n1"}):
        response = client.post("/bind", json=bad_bind)
        assert response.status_code == 400 and "invalid ExtenderBindingArgs" in response.json()["error"], bad_bind
    assert client.post("/preempt", json={"Pod": pod(), "NodeNameToMetaVictims": {"n1": {"Pods": [5]}}}
                       ).status_code == 400
    assert client.put("/nodes", json={"items": [node("n1"), node("n1")]}).json()["error"].endswith(
        "names a node twice (got 'n1')")


# --------------------------------------------------------------------------- properties


TAINTS = st.lists(st.builds(V1Taint, key=st.sampled_from(["a", "b"]), value=st.sampled_from(["", "x"]),
                            effect=st.sampled_from(["NoSchedule", "NoExecute", "PreferNoSchedule"])), max_size=2)
TOLERATIONS = st.lists(st.builds(V1Toleration, key=st.sampled_from([None, "a", "b"]),
                                 operator=st.sampled_from(["Equal", "Exists"]), value=st.sampled_from([None, "x"]),
                                 effect=st.sampled_from([None, "NoSchedule", "NoExecute"])), max_size=2)


def _tolerated(tol: V1Toleration, taint: V1Taint) -> bool:
    if (tol.effect and tol.effect != taint.effect) or (tol.key and tol.key != taint.key):
        return False
    return tol.operator == "Exists" or (tol.value or "") == (taint.value or "")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.integers(0, 4000), st.integers(0, 4096), TAINTS), min_size=1, max_size=8),
       st.integers(0, 4000), st.integers(0, 4096), TOLERATIONS, st.booleans())
def test_filter_passes_exactly_the_nodes_with_room_and_no_untolerated_taint(
        specs: list[tuple[int, int, list[V1Taint]]], cpu: int, memory: int, tolerations: list[V1Toleration],
        cache: bool) -> None:
    nodes = [node(f"n{i}", cpu=f"{c}m", memory=f"{m}Mi", taints=t or None) for i, (c, m, t) in enumerate(specs)]
    extender = Extender(nodes if cache else None)
    result = extender.filter(ExtenderArgs.decode(args(pod(cpu=f"{cpu}m", memory=f"{memory}Mi",
                                                          tolerations=tolerations or None), nodes, cache)))
    passed = set(result.node_names or ()) | {n["metadata"]["name"] for n in result.nodes or ()}
    for i, (c, m, taints) in enumerate(specs):
        blocked = any(t.effect != "PreferNoSchedule" and not any(_tolerated(tol, t) for tol in tolerations)
                      for t in taints)
        fits = cpu <= c and memory <= m
        assert (f"n{i}" in passed) == (fits and not blocked)
        assert (f"n{i}" in result.unresolvable) == (f"n{i}" not in passed)




def test_keys_are_decoded_case_insensitively() -> None:
    extender = Extender([node("n1"), node("n2", cpu="100m")])
    lower = ExtenderArgs.decode({"pod": pod(), "nodenames": ["n1", "n2"]})
    assert extender.filter(lower).node_names == ("n1",)
    # Every spelling fills the field, the last one wins, as in encoding/json
    assert ExtenderArgs.decode({"POD": pod(), "nodeNames": ["n2"], "NodeNames": ["n1"]}).node_names == ("n1",)
    assert ExtenderArgs.decode({"Pod": pod(), "NodeNames": ["n1"], "nodenames": ["n2"]}).node_names == ("n2",)


KEYS = ["zone", "cores", "disk"]
VALUES = ["a", "b", "1", "16", "-3"]


@st.composite
def requirements(draw: st.DrawFn) -> dict[str, Any]:
    key, operator = draw(st.sampled_from(KEYS)), draw(st.sampled_from(["In", "NotIn", "Exists", "DoesNotExist",
                                                                        "Gt", "Lt"]))
    if operator in ("In", "NotIn"):
        return {"key": key, "operator": operator, "values": draw(st.lists(st.sampled_from(VALUES), min_size=1,
                                                                          max_size=2))}
    if operator in ("Gt", "Lt"):
        return {"key": key, "operator": operator, "values": [str(draw(st.sampled_from([-3, 1, 16, 0])))]}
    return {"key": key, "operator": operator}


def _holds(req: dict[str, Any], labels: dict[str, str], name: str) -> bool:
    """NodeSelectorRequirement semantics, written out plainly (k8s.io/apimachinery labels)."""
    if req["key"] == "metadata.name":
        return (name in req["values"]) == (req["operator"] == "In")
    value = labels.get(req["key"])
    op = req["operator"]
    if op in ("In", "NotIn"):
        return (value is not None and value in req["values"]) == (op == "In")
    if op in ("Exists", "DoesNotExist"):
        return (value is not None) == (op == "Exists")
    try:
        number = int(value) if value is not None else None
    except ValueError:
        number = None
    bound = int(req["values"][0])
    return number is not None and (number > bound if op == "Gt" else number < bound)


TERMS = st.lists(st.fixed_dictionaries({"matchExpressions": st.lists(requirements(), max_size=3)},
                                       optional={"matchFields": st.lists(st.builds(
                                           lambda op, names: {"key": "metadata.name", "operator": op, "values": names},
                                           st.sampled_from(["In", "NotIn"]),
                                           st.lists(st.sampled_from(["n0", "n1", "n2"]), min_size=1, max_size=2)),
                                           max_size=1)}), min_size=1, max_size=2)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.dictionaries(st.sampled_from(KEYS), st.sampled_from(VALUES)), min_size=1, max_size=4), TERMS,
       st.dictionaries(st.sampled_from(KEYS), st.sampled_from(VALUES), max_size=1))
def test_node_affinity_matches_the_selector_semantics(labels: list[dict[str, str]], terms: list[dict[str, Any]],
                                                      selector: dict[str, str]) -> None:
    nodes = [node(f"n{i}", labels=ls) for i, ls in enumerate(labels)]
    spec = pod()
    spec["spec"]["nodeSelector"] = selector or None
    spec["spec"]["affinity"] = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
        "nodeSelectorTerms": terms}}}
    result = Extender(nodes).filter(ExtenderArgs.decode(args(spec, nodes, cache=True)))
    for i, ls in enumerate(labels):
        name = f"n{i}"
        own = {"kubernetes.io/hostname": name, **ls}
        wanted = all(own.get(k) == v for k, v in selector.items()) and any(
            (t["matchExpressions"] or t.get("matchFields"))
            and all(_holds(r, own, name) for r in [*t["matchExpressions"], *t.get("matchFields", [])])
            for t in terms)
        assert (name in (result.node_names or ())) == bool(wanted), (name, own)
        if not wanted:
            assert result.unresolvable[name] == "node(s) didn't match Pod's node affinity/selector"
