"""``/api/v1/hosts``: list, show, register, update, transitions, maintenance, remove.

Host transitions that need no host (approve, activate, reinstall, confirm-down, remove,
update, cancelling a maintenance) are done at once, compare-and-swap; a maintenance is an
operation (202) that the leading manager carries out by draining the host.
"""

from __future__ import annotations

import contextlib
import json
from typing import Annotated, Any

from fastapi import APIRouter, Body, Request, Response
from pydantic import BaseModel, ConfigDict

from clustercore.errors import InvalidTransition, ValidationError
from clustercore.lifecycle import TRANSITIONS, HostEvent, allowed_events
from clustercore.model import Host
from clustercore.state import STATS
from clustercore.statistics import Load

from .context import Admin, ApiDep, Operator, Viewer
from .errors import Refused
from .views import host_view, keep_passwords, operation_view

router = APIRouter(prefix="/hosts", tags=["hosts"])
JSON = "application/json"
HostDocument = Annotated[dict[str, Any], Body(description="A host: name, capacity, address, labels, location, "
                                                           "fence_devices, taints, schedulable, self_fence")]


class Maintenance(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    stop_unmovable: bool = False


def _view(api: ApiDep, name: str, host: Host | None = None) -> dict[str, Any]:
    """The host as just written (``host``), or as the cache has it."""
    if host is None:
        return api.cache.host(name)
    return host_view(host, api.cache.workloads_on(name), full=True)


@router.get("", summary="Every host with its state, reason, a summary of its facts and its workloads")
def list_hosts(api: ApiDep, caller: Viewer) -> Response:
    return Response(api.cache.hosts_json(), media_type=JSON)


@router.get("/{name}", summary="One host in full (facts included), with its measured load when there is one")
def show_host(name: str, api: ApiDep, caller: Viewer) -> dict[str, Any]:
    view = _view(api, name)
    measured = api.cluster.store.get(STATS + name)
    if measured is not None:
        with contextlib.suppress(ValueError, ValidationError):
            view["load"] = Load.from_dict(json.loads(measured.value)).to_dict()
    return view


@router.post("", status_code=201, summary="Register a host: the host and its heartbeat credential (shown once)")
def register_host(definition: HostDocument, request: Request, api: ApiDep, caller: Admin) -> dict[str, Any]:
    host = api.cluster.register_host(definition)
    credential = api.cluster.credentials.pop(host.name, None)
    request.state.subject = f"host/{host.name}"
    return {"host": host_view(host, (), full=True), "credential": credential}


@router.patch("/{name}", summary="Change a host in place: capacity, address, labels, location, fence devices, "
                                 "taints, schedulable, self_fence (a fence device without password keeps its "
                                 "password)")
def update_host(name: str, changes: HostDocument, api: ApiDep, caller: Admin) -> dict[str, Any]:
    current = api.cluster.host(name)
    if "fence_devices" in changes:
        changes = {**changes, "fence_devices": keep_passwords(current, changes["fence_devices"])}
    return _view(api, name, api.cluster.update_host(name, changes, by=caller.name))


@router.post("/{name}/approve", summary="Let a PendingApproval host join")
def approve_host(name: str, api: ApiDep, caller: Admin) -> dict[str, Any]:
    return _view(api, name, api.cluster.approve_host(name))


@router.post("/{name}/activate", summary="Bring a host out of Maintenance or NonOperational")
def activate_host(name: str, api: ApiDep, caller: Admin) -> dict[str, Any]:
    return _view(api, name, api.cluster.activate_host(name))


@router.post("/{name}/reinstall", summary="Bootstrap a host again (from InstallFailed or Maintenance)")
def reinstall_host(name: str, api: ApiDep, caller: Admin) -> dict[str, Any]:
    return _view(api, name, api.cluster.reinstall_host(name))


@router.post("/{name}/confirm-down", summary="Vouch that a NonResponsive host is really off")
def confirm_down(name: str, api: ApiDep, caller: Admin) -> dict[str, Any]:
    return _view(api, name, api.cluster.confirm_down(name))


@router.post("/{name}/maintenance", status_code=202,
             summary="Drain a host into Maintenance: the operation (one at a time per host)")
def start_maintenance(name: str, api: ApiDep, caller: Operator,
                      options: Maintenance | None = None) -> dict[str, Any]:
    host = api.cluster.host(name)
    busy = api.cache.open_operation(name, frozenset({"maintenance", "fence"}))
    if busy is not None:
        raise Refused(f"operation {busy.id} ({busy.kind} of {name}) is {busy.state} already")
    if (host.state, HostEvent.PREPARE_MAINTENANCE) not in TRANSITIONS:
        raise InvalidTransition(name, host.state, HostEvent.PREPARE_MAINTENANCE, allowed_events(host.state))
    op = api.cluster.request("maintenance", name, {"stop_unmovable": (options or Maintenance()).stop_unmovable},
                             by=caller.name)
    return operation_view(op)


@router.delete("/{name}/maintenance", summary="Cancel a maintenance: its operation, and the drain at once")
def cancel_maintenance(name: str, api: ApiDep, caller: Operator) -> dict[str, Any]:
    api.cluster.host(name)  # UnknownHost
    open_op = api.cache.open_operation(name, frozenset({"maintenance"}))
    op = None
    if open_op is not None:
        op = api.cluster.cancel_operation(open_op.id, by=caller.name)
    else:
        api.cluster.cancel_maintenance(name)
    return {"host": _view(api, name, api.cluster.host(name)),
            "operation": operation_view(op) if op is not None else None}


@router.delete("/{name}", status_code=204, summary="Forget a host (PendingApproval, InstallFailed, Maintenance or "
                                                   "Down, with no workloads)")
def remove_host(name: str, api: ApiDep, caller: Admin) -> Response:
    api.cluster.remove_host(name)
    return Response(status_code=204)
