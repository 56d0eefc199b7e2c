"""Pods and Nodes as kube-scheduler sends them to an extender, for the extender's tests:
built with the kubernetes client's models and serialised as the API serialises them."""

from __future__ import annotations

from typing import Any

from kubernetes.client import (
    ApiClient,
    V1Container,
    V1Node,
    V1NodeSpec,
    V1NodeStatus,
    V1ObjectMeta,
    V1Pod,
    V1PodSpec,
    V1ResourceRequirements,
)
from starlette.testclient import TestClient

from clustercore.adapters.kube import Extender, create_app

API = ApiClient()


def doc(obj: Any) -> dict[str, Any]:
    return API.sanitize_for_serialization(obj)  # type: ignore[no-any-return]


def pod(name: str = "web", cpu: str | None = "500m", memory: str | None = "1Gi", *, tolerations: Any = None,
        node_selector: Any = None, affinity: Any = None, node_name: Any = None, init: Any = None,
        overhead: Any = None, uid: str = "uid-web") -> dict[str, Any]:
    requests = {k: v for k, v in (("cpu", cpu), ("memory", memory)) if v is not None}
    return doc(V1Pod(metadata=V1ObjectMeta(name=name, namespace="default", uid=uid),
                     spec=V1PodSpec(containers=[V1Container(name="c", image="nginx",
                                                            resources=V1ResourceRequirements(requests=requests))],
                                    init_containers=init, tolerations=tolerations, node_selector=node_selector,
                                    affinity=affinity, node_name=node_name, overhead=overhead)))


def node(name: str, cpu: str = "4", memory: str = "8Gi", pods: str = "110", *, labels: Any = None,
         taints: Any = None, unschedulable: Any = None, extra: Any = None) -> dict[str, Any]:
    allocatable = {"cpu": cpu, "memory": memory, "pods": pods, **(extra or {})}
    return doc(V1Node(metadata=V1ObjectMeta(name=name, labels={"kubernetes.io/hostname": name, **(labels or {})}),
                      spec=V1NodeSpec(taints=taints, unschedulable=unschedulable),
                      status=V1NodeStatus(allocatable=allocatable, capacity=allocatable)))


def args(p: dict[str, Any], nodes: list[dict[str, Any]], cache: bool) -> dict[str, Any]:
    """ExtenderArgs as kube-scheduler's json.Marshal writes it."""
    if cache:
        return {"Pod": p, "Nodes": None, "NodeNames": [n["metadata"]["name"] for n in nodes]}
    return {"Pod": p, "Nodes": {"metadata": {}, "items": nodes}, "NodeNames": None}


class Cluster:
    """The HTTP app with an extender; in cache mode the nodes are PUT to /nodes first."""

    def __init__(self, cache: bool, max_body: int | None = None) -> None:
        self.cache = cache
        self.extender = Extender()
        self.client = TestClient(create_app(self.extender, **({"max_body": max_body} if max_body else {})))

    def call(self, verb: str, p: dict[str, Any], nodes: list[dict[str, Any]]) -> Any:
        if self.cache:
            assert self.client.put("/nodes", json={"kind": "NodeList", "items": nodes}).json() == {"nodes": len(nodes)}
        response = self.client.post(f"/{verb}", json=args(p, nodes, self.cache))
        assert response.status_code == 200, response.text
        return response.json()

    def filter(self, p: dict[str, Any], nodes: list[dict[str, Any]]) -> tuple[list[str], dict[str, str]]:
        result = self.call("filter", p, nodes)
        assert set(result) == {"Nodes", "NodeNames", "FailedNodes", "FailedAndUnresolvableNodes", "Error"}
        assert result["Error"] == "" and result["FailedNodes"] == {}
        if self.cache:
            assert result["Nodes"] is None
            passed = result["NodeNames"]
        else:
            assert result["NodeNames"] is None
            passed = [n["metadata"]["name"] for n in result["Nodes"]["items"]]
            sent = {n["metadata"]["name"]: n for n in nodes}
            assert all(n == sent[n["metadata"]["name"]] for n in result["Nodes"]["items"])  # the documents sent
        return passed, result["FailedAndUnresolvableNodes"]
