"""What the API shows of each object: JSON-ready dicts, with every secret left out.

A host's fence device passwords are never shown (``password_set`` says whether one is
stored); heartbeat credentials and token secrets never leave the server except once, in
the answer that made them. :func:`redact` blanks the same fields in anything echoed back
(an error naming a bad value, for instance).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from clustercore.config import ClusterConfig
from clustercore.events import Event
from clustercore.lifecycle import accepts_workloads
from clustercore.model import Host, Placement, Workload
from clustercore.operations import Operation
from clustercore.scheduling.engine import Row

#: Keys whose values are secrets wherever they appear.
SECRET_KEYS = frozenset({"password", "credential", "secret", "token", "digest"})
HIDDEN = "(hidden)"


def redact(value: Any, depth: int = 0) -> Any:
    """``value`` with every secret key's value replaced (mappings and lists walked)."""
    if depth > 20:
        return "..."
    if isinstance(value, Mapping):
        return {k: HIDDEN if str(k).lower() in SECRET_KEYS and v not in ("", None) else redact(v, depth + 1)
                for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact(v, depth + 1) for v in value]
    return value


def secret_field(field: str) -> bool:
    """Whether a dotted field path names a secret (``fence_devices[0].password``)."""
    last = field.rsplit(".", 1)[-1].split("[", 1)[0].lower()
    return last in SECRET_KEYS


def host_view(host: Host, workloads: Sequence[str], full: bool = False) -> dict[str, Any]:
    """A host without its secrets, with the workloads placed on it; ``facts`` in full only
    when ``full`` (a listing gives ``facts_summary``: the fact names each flavor found)."""
    data = host.to_dict()
    data["fence_devices"] = [_device(d) for d in data["fence_devices"]]
    facts = data.pop("facts")
    if full:
        data["facts"] = facts
    else:
        data["facts_summary"] = {k: sorted(v) if isinstance(v, Mapping) else v for k, v in facts.items()}
    data["workloads"] = list(workloads)
    return data


def _device(device: dict[str, Any]) -> dict[str, Any]:
    device = dict(device)
    device["password_set"] = bool(device.pop("password", ""))
    return device


def keep_passwords(current: Host, devices: object) -> object:
    """Fence devices of a host update where a device given without ``password`` keeps the
    stored one of the device at the same position (same agent and address): an operator
    changes a username or a level without sending the password again."""
    if not isinstance(devices, list):
        return devices
    out: list[object] = []
    for i, device in enumerate(devices):
        if isinstance(device, Mapping) and "password" not in device and i < len(current.fence_devices):
            old = current.fence_devices[i]
            if (device.get("agent"), device.get("address")) == (old.agent, old.address):
                device = {**device, "password": old.password}
        out.append(device)
    return out


def workload_view(workload: Workload, placement: Placement | None) -> dict[str, Any]:
    data = redact(workload.to_dict())
    data["placement"] = placement.to_dict() if placement is not None else None
    return dict(data)


def operation_view(op: Operation) -> dict[str, Any]:
    return op.to_dict()


def event_view(event: Event) -> dict[str, Any]:
    return {**event.to_dict(), "revision": event.revision}


def row_view(row: Row) -> dict[str, Any]:
    """A scheduler explain row: ``passes``, the ``reason`` it does not, or its scores."""
    return {"host": row.host, "passes": row.reason is None, "reason": row.reason,
            "scores": dict(row.scores), "score": row.total, "chosen": row.chosen}


def capacity_view(hosts: Iterable[Host], placed: Iterable[tuple[Workload, str]],
                  config: ClusterConfig) -> dict[str, Any]:
    """Totals, used and free per resource over the hosts that take workloads (overcommit
    applied), and the N+1 headroom: whether the HA workloads of the worst host would fit
    in what the other hosts have free."""
    usable = {h.name: h for h in hosts if accepts_workloads(h)}
    names = ["cpu", "memory", *sorted({k for h in usable.values() for k, _ in h.allocatable.extended})]
    total = dict.fromkeys(names, 0.0)
    free_on: dict[str, dict[str, float]] = {}
    for h in usable.values():
        free_on[h.name] = {r: h.allocatable.get(r) * config.overcommit.get(r, 1.0) for r in names}
        for r in names:
            total[r] += free_on[h.name][r]
    used = dict.fromkeys(names, 0.0)
    ha_load: dict[str, dict[str, float]] = {}
    for workload, host in placed:
        if host not in usable:
            continue
        for r in names:
            amount = float(workload.requests.get(r))
            used[r] += amount
            free_on[host][r] -= amount
            if workload.ha:
                ha_load.setdefault(host, dict.fromkeys(names, 0.0))[r] += amount
    free = {r: total[r] - used[r] for r in names}
    worst, short = None, []
    for host, load in sorted(ha_load.items()):
        lacking = [r for r in names if load[r] > free[r] - max(free_on[host][r], 0.0) + 1e-9]
        if lacking and (worst is None or len(lacking) > len(short)):
            worst, short = host, lacking
    return {"hosts": len(usable),
            "resources": {r: {"total": total[r], "used": used[r], "free": free[r]} for r in names},
            "overcommit": dict(config.overcommit),
            "n_plus_1": {"ok": worst is None, "worst_host": worst, "short_of": short,
                         "required": config.ha_headroom}}
