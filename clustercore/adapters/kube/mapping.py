"""Pod and Node documents (the API's JSON, as kube-scheduler sends them) onto the scheduler.

A Node becomes a :class:`~clustercore.model.Host` (Up, schedulable: the Kubernetes rules
are the adapter's own filters) whose ``allocatable`` is ``status.allocatable`` and whose
labels are the node's, plus a :class:`NodeInfo` with its taints and ``spec.unschedulable``.
A Pod becomes a :class:`~clustercore.model.Workload` (flavor ``kubernetes``) whose
requests are computed as kube-scheduler computes them, with a :class:`PodInfo` in
``spec["pod"]`` for the rules (tolerations, nodeSelector, node affinity, nodeName).

Units inside the adapter: ``cpu`` in millicores, ``memory`` and every other resource in
the quantity's base unit (bytes for memory, ephemeral-storage and hugepages), ``pods`` a
count; a pod requests one ``pods``. Quantities round up, as ``Quantity.MilliValue`` and
``Value`` do.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from decimal import Decimal, DecimalException
from typing import Any

import attrs

from clustercore.adapters.kube.wire import Doc, array, bad, field, integer, obj, string
from clustercore.errors import ValidationError
from clustercore.model import FrozenMap, Host, HostState, Resources, Workload, frozen_map

FLAVOR = "kubernetes"
OPERATORS = frozenset({"In", "NotIn", "Exists", "DoesNotExist", "Gt", "Lt"})
EFFECTS = frozenset({"NoSchedule", "PreferNoSchedule", "NoExecute"})
UNSCHEDULABLE_TAINT = "node.kubernetes.io/unschedulable"

_QUANTITY = re.compile(r"([+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))(Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE]|[eE][+-]?[0-9]{1,3})?\Z")
_SUFFIX = {"": Decimal(1), "n": Decimal("1e-9"), "u": Decimal("1e-6"), "m": Decimal("1e-3"), "k": Decimal(10) ** 3,
           "M": Decimal(10) ** 6, "G": Decimal(10) ** 9, "T": Decimal(10) ** 12, "P": Decimal(10) ** 15,
           "E": Decimal(10) ** 18, "Ki": Decimal(2) ** 10, "Mi": Decimal(2) ** 20, "Gi": Decimal(2) ** 30,
           "Ti": Decimal(2) ** 40, "Pi": Decimal(2) ** 50, "Ei": Decimal(2) ** 60}
_LIMIT = Decimal(2) ** 62


def quantity(kind: str, path: str, value: Any, milli: bool = False) -> int:
    """A resource.Quantity ("500m", "128Mi", "1.5", "1e3", or a JSON number) as an integer:
    base units rounded up, or millis with ``milli``. Negative or absurd values are refused."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise bad(kind, path, "must be a quantity", value)
    if isinstance(value, str):
        try:
            return _parsed(value, milli)
        except ValueError as exc:
            raise bad(kind, path, str(exc), value) from None
    return _amount(kind, path, value, milli)


@functools.lru_cache(maxsize=4096)
def _parsed(value: str, milli: bool) -> int:
    """A quantity string's amount (cached: a cluster's nodes repeat a few quantities)."""
    try:
        return _amount("", "", value, milli)
    except ValidationError as exc:
        raise ValueError(exc.problem) from None


def _amount(kind: str, path: str, value: str | int | float, milli: bool) -> int:
    match = _QUANTITY.match(value) if isinstance(value, str) else None
    if isinstance(value, str) and match is None:
        raise bad(kind, path, "is not a quantity (such as 500m, 128Mi, 2)", value)
    try:
        if match is not None:
            number, suffix = Decimal(match[1]), match[2] or ""
            exponent = suffix[:1] in ("e", "E") and len(suffix) > 1
            amount = number * (Decimal(10) ** int(suffix[1:]) if exponent else _SUFFIX[suffix])
        else:
            amount = Decimal(value)
        out_of_range = amount.is_nan() or amount < 0 or amount > _LIMIT
    except DecimalException:
        raise bad(kind, path, "is not a quantity", value) from None
    if out_of_range:
        raise bad(kind, path, "must be between 0 and 2^62", value)
    scaled = amount * 1000 if milli else amount
    return int(scaled.to_integral_value(rounding="ROUND_CEILING"))


def resource_map(kind: str, path: str, value: Any) -> dict[str, int]:
    """A ResourceList: name -> integer amount (cpu in millicores)."""
    doc = obj(kind, path, value) or {}
    out = {}
    for name, amount in doc.items():
        if not isinstance(name, str) or not name:
            raise bad(kind, path, "resource names must be non-empty strings", name)
        out[name] = quantity(kind, f"{path}.{name}", amount, milli=name == "cpu")
    return out


def as_resources(amounts: Mapping[str, int]) -> Resources:
    rest = {k: v for k, v in amounts.items() if k not in ("cpu", "memory")}
    return Resources(amounts.get("cpu", 0), amounts.get("memory", 0), rest)


def _add(a: dict[str, int], b: Mapping[str, int]) -> dict[str, int]:
    out = dict(a)
    for k, v in b.items():
        out[k] = out.get(k, 0) + v
    return out


def _max(a: dict[str, int], b: Mapping[str, int]) -> dict[str, int]:
    out = dict(a)
    for k, v in b.items():
        out[k] = max(out.get(k, 0), v)
    return out


def _container_requests(kind: str, path: str, value: Any) -> list[tuple[dict[str, int], bool]]:
    out = []
    for i, container in enumerate(array(kind, path, value) or []):
        container = obj(kind, f"{path}[{i}]", container, required=True)
        assert container is not None
        res = obj(kind, f"{path}[{i}].resources", field(container, "resources")) or {}
        requests = resource_map(kind, f"{path}[{i}].resources.requests", field(res, "requests"))
        sidecar = string(kind, f"{path}[{i}].restartPolicy", field(container, "restartPolicy")) == "Always"
        out.append((requests, sidecar))
    return out


def pod_requests(kind: str, spec: Doc) -> dict[str, int]:
    """What kube-scheduler counts for a pod (``resourcehelper.PodRequests``): the containers'
    sum plus sidecars (init containers with restartPolicy Always), or the largest init
    container's need (with the sidecars started before it) if larger, per resource; plus
    ``overhead``; plus one ``pods``."""
    total: dict[str, int] = {}
    for requests, _ in _container_requests(kind, "spec.containers", field(spec, "containers")):
        total = _add(total, requests)
    sidecars: dict[str, int] = {}
    init: dict[str, int] = {}
    for requests, sidecar in _container_requests(kind, "spec.initContainers", field(spec, "initContainers")):
        if sidecar:
            sidecars = _add(sidecars, requests)
            need = sidecars
        else:
            need = _add(requests, sidecars)
        init = _max(init, need)
    total = _max(_add(total, sidecars), init)
    total = _add(total, resource_map(kind, "spec.overhead", field(spec, "overhead")))
    total["pods"] = total.get("pods", 0) + 1
    return {k: v for k, v in total.items() if v}


# --------------------------------------------------------------------------- rules


@attrs.frozen
class Requirement:
    """One NodeSelectorRequirement (matchExpressions on labels, matchFields on fields)."""

    key: str
    operator: str
    values: tuple[str, ...] = ()


@attrs.frozen
class Term:
    """A NodeSelectorTerm: every requirement must hold; a term with none matches nothing."""

    expressions: tuple[Requirement, ...] = ()
    fields: tuple[Requirement, ...] = ()


@attrs.frozen
class Toleration:
    key: str = ""
    operator: str = "Equal"
    value: str = ""
    effect: str = ""

    def tolerates(self, taint: Taint) -> bool:
        """``v1.Toleration.ToleratesTaint``: an empty effect matches all effects, an empty key
        with Exists matches every taint; Equal compares values."""
        if self.effect and self.effect != taint.effect:
            return False
        if self.key and self.key != taint.key:
            return False
        if self.operator == "Exists":
            return True
        return self.operator in ("", "Equal") and self.value == taint.value


@attrs.frozen
class Taint:
    key: str
    value: str = ""
    effect: str = "NoSchedule"


def _requirement(kind: str, path: str, value: Any, on_fields: bool) -> Requirement:
    doc = obj(kind, path, value, required=True)
    assert doc is not None
    key = string(kind, f"{path}.key", field(doc, "key"))
    operator = string(kind, f"{path}.operator", field(doc, "operator"))
    raw = array(kind, f"{path}.values", field(doc, "values")) or []
    values = tuple(string(kind, f"{path}.values[{i}]", v) for i, v in enumerate(raw))
    allowed = {"In", "NotIn"} if on_fields else OPERATORS
    if operator not in allowed:
        raise bad(kind, f"{path}.operator", f"must be one of {', '.join(sorted(allowed))}", operator)
    if on_fields and key != "metadata.name":
        raise bad(kind, f"{path}.key", "matchFields supports metadata.name only", key)
    if operator in ("In", "NotIn") and not values:
        raise bad(kind, f"{path}.values", f"{operator} needs values", raw)
    if operator in ("Exists", "DoesNotExist") and values:
        raise bad(kind, f"{path}.values", f"{operator} takes no values", raw)
    if operator in ("Gt", "Lt") and (len(values) != 1 or not re.fullmatch(r"[+-]?[0-9]{1,18}", values[0])):
        raise bad(kind, f"{path}.values", f"{operator} needs one integer", raw)
    return Requirement(key, operator, values)


def _term(kind: str, path: str, value: Any) -> Term:
    doc = obj(kind, path, value, required=True)
    assert doc is not None
    exprs = array(kind, f"{path}.matchExpressions", field(doc, "matchExpressions")) or []
    fields = array(kind, f"{path}.matchFields", field(doc, "matchFields")) or []
    return Term(tuple(_requirement(kind, f"{path}.matchExpressions[{i}]", e, False) for i, e in enumerate(exprs)),
                tuple(_requirement(kind, f"{path}.matchFields[{i}]", e, True) for i, e in enumerate(fields)))


def _str_map(kind: str, path: str, value: Any) -> dict[str, str]:
    doc = obj(kind, path, value) or {}
    return {k: string(kind, f"{path}.{k}", v) for k, v in doc.items()}


@attrs.frozen
class PodInfo:
    """What the Kubernetes rules read of a pod."""

    name: str
    namespace: str
    uid: str
    node_name: str = ""
    node_selector: FrozenMap[str, str] = attrs.field(factory=FrozenMap, converter=frozen_map)
    #: requiredDuringSchedulingIgnoredDuringExecution's terms (ORed); None: no requirement.
    required: tuple[Term, ...] | None = None
    #: preferredDuringSchedulingIgnoredDuringExecution: (weight, term).
    preferred: tuple[tuple[int, Term], ...] = ()
    tolerations: tuple[Toleration, ...] = ()

    def tolerates(self, taint: Taint) -> bool:
        return any(t.tolerates(taint) for t in self.tolerations)


def pod_workload(pod: Doc) -> Workload:
    """The Pod document as a Workload carrying its :class:`PodInfo` in ``spec["pod"]``."""
    kind = "Pod"
    meta = obj(kind, "metadata", field(pod, "metadata")) or {}
    spec = obj(kind, "spec", field(pod, "spec")) or {}
    name = string(kind, "metadata.name", field(meta, "name"))
    namespace = string(kind, "metadata.namespace", field(meta, "namespace"), "default")
    uid = string(kind, "metadata.uid", field(meta, "uid"))
    tolerations = []
    for i, t in enumerate(array(kind, "spec.tolerations", field(spec, "tolerations")) or []):
        path = f"spec.tolerations[{i}]"
        t = obj(kind, path, t, required=True)
        assert t is not None
        tol = Toleration(*(string(kind, f"{path}.{k}", field(t, k)) for k in ("key", "operator", "value", "effect")))
        if tol.operator not in ("", "Equal", "Exists"):
            raise bad(kind, f"{path}.operator", "must be Equal or Exists", tol.operator)
        tolerations.append(tol)
    required: tuple[Term, ...] | None = None
    preferred = []
    affinity = obj(kind, "spec.affinity", field(spec, "affinity")) or {}
    node_affinity = obj(kind, "spec.affinity.nodeAffinity", field(affinity, "nodeAffinity")) or {}
    path = "spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution"
    selector = obj(kind, path, field(node_affinity, "requiredDuringSchedulingIgnoredDuringExecution"))
    if selector is not None:
        terms = array(kind, f"{path}.nodeSelectorTerms", field(selector, "nodeSelectorTerms")) or []
        required = tuple(_term(kind, f"{path}.nodeSelectorTerms[{i}]", t) for i, t in enumerate(terms))
    path = "spec.affinity.nodeAffinity.preferredDuringSchedulingIgnoredDuringExecution"
    for i, p in enumerate(array(kind, path, field(node_affinity, "preferredDuringSchedulingIgnoredDuringExecution"))
                          or []):
        p = obj(kind, f"{path}[{i}]", p, required=True)
        assert p is not None
        weight = integer(kind, f"{path}[{i}].weight", field(p, "weight"))
        if not 1 <= weight <= 100:
            raise bad(kind, f"{path}[{i}].weight", "must be 1..100", weight)
        preferred.append((weight, _term(kind, f"{path}[{i}].preference", field(p, "preference"))))
    info = PodInfo(name, namespace, uid, string(kind, "spec.nodeName", field(spec, "nodeName")),
                   _str_map(kind, "spec.nodeSelector", field(spec, "nodeSelector")), required, tuple(preferred),
                   tuple(tolerations))
    labels = _str_map(kind, "metadata.labels", field(meta, "labels"))
    return Workload(f"{namespace}/{name}", FLAVOR, as_resources(pod_requests(kind, spec)), labels=labels,
                    spec={"pod": info})


def pod_info(workload: Workload) -> PodInfo:
    info = workload.spec["pod"]
    assert isinstance(info, PodInfo)
    return info


# --------------------------------------------------------------------------- nodes


@attrs.frozen
class NodeInfo:
    """What the Kubernetes rules read of a node beyond its Host."""

    taints: tuple[Taint, ...] = ()
    unschedulable: bool = False


def node_host(node: Doc, path: str = "node") -> tuple[Host, NodeInfo]:
    kind = "Node"
    meta = obj(kind, f"{path}.metadata", field(node, "metadata")) or {}
    spec = obj(kind, f"{path}.spec", field(node, "spec")) or {}
    status = obj(kind, f"{path}.status", field(node, "status")) or {}
    name = string(kind, f"{path}.metadata.name", field(meta, "name"))
    if not name:
        raise bad(kind, f"{path}.metadata.name", "is required", name)
    taints = []
    for i, t in enumerate(array(kind, f"{path}.spec.taints", field(spec, "taints")) or []):
        tpath = f"{path}.spec.taints[{i}]"
        t = obj(kind, tpath, t, required=True)
        assert t is not None
        taint = Taint(string(kind, f"{tpath}.key", field(t, "key")), string(kind, f"{tpath}.value", field(t, "value")),
                      string(kind, f"{tpath}.effect", field(t, "effect")))
        if taint.effect not in EFFECTS:
            raise bad(kind, f"{tpath}.effect", f"must be one of {', '.join(sorted(EFFECTS))}", taint.effect)
        taints.append(taint)
    unschedulable = field(spec, "unschedulable")
    if unschedulable is not None and not isinstance(unschedulable, bool):
        raise bad(kind, f"{path}.spec.unschedulable", "must be a boolean", unschedulable)
    allocatable = as_resources(resource_map(kind, f"{path}.status.allocatable", field(status, "allocatable")))
    host = Host(name, capacity=allocatable, allocatable=allocatable,
                labels=_str_map(kind, f"{path}.metadata.labels", field(meta, "labels")), state=HostState.UP)
    return host, NodeInfo(tuple(taints), bool(unschedulable))
