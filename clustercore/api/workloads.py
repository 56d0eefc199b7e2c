"""``/api/v1/workloads``: list, show, create (JSON or YAML, VM documents too), start,
stop, migrate, delete. Everything that runs a driver is an operation (202) that the
leading manager carries out, one at a time per workload."""

from __future__ import annotations

import importlib
import json
import uuid
from collections.abc import Mapping
from typing import Annotated, Any

import yaml
from fastapi import APIRouter, Depends, Request, Response
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict

from clustercore.cluster import Cluster
from clustercore.errors import UnknownHost, ValidationError
from clustercore.model import NAME_RE, Reader, Workload
from clustercore.operations import Operation

from .context import ApiDep, Caller, Operator, Viewer
from .errors import Malformed, Refused
from .views import operation_view, workload_view

router = APIRouter(prefix="/workloads", tags=["workloads"])
WORK = frozenset({"start", "stop", "migrate", "delete"})
YAML_TYPES = frozenset({"application/yaml", "application/x-yaml", "text/yaml"})
DOCUMENT = {"requestBody": {"required": True, "description": "A workload, or a VM document "
                            "{name, flavor: vm, vm: {VMSpec}, ha, priority, labels}", "content": {
                                "application/json": {"schema": {"type": "object"}},
                                "application/yaml": {"schema": {"type": "object"}}}}}


class Stop(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    force: bool = False


class Migrate(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    target: str | None = None


class _NoAliases(yaml.SafeLoader):
    """YAML without anchors and aliases: a 1 MiB document cannot expand into gigabytes."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            raise yaml.composer.ComposerError(None, None, "aliases (*name) are not accepted", None)
        return super().compose_node(parent, index)


def parse(raw: bytes, content_type: str) -> object:
    """A JSON or YAML document (by its content type); Malformed when it is not one."""
    media = content_type.split(";", 1)[0].strip().lower() or "application/json"
    try:
        if media in YAML_TYPES:
            return yaml.load(raw, Loader=_NoAliases)  # a SafeLoader
        if media == "application/json" or media.endswith("+json"):
            return json.loads(raw)
    except (ValueError, yaml.YAMLError) as exc:
        raise Malformed(f"the body is not {'YAML' if media in YAML_TYPES else 'JSON'}: "
                        f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
    raise Refused(f"a workload is JSON or YAML (application/json, application/yaml), not {media}", 415,
                  "UnsupportedMediaType")


async def document(request: Request) -> object:
    raw = await request.body()
    return await run_in_threadpool(parse, raw, request.headers.get("content-type", "application/json"))


Document = Annotated[object, Depends(document)]


def to_workload(data: object, cluster: Cluster) -> Workload:
    """A workload from a workload dict, or from a VM document (only where the virt flavor
    is loaded: it makes the workload of the VMSpec, with a fresh uuid unless one is given)."""
    if not isinstance(data, Mapping) or "vm" not in data:
        return Workload.from_dict(data)
    r = Reader("vm document", data)
    name = r.string("name", pattern=NAME_RE)
    if r.string("flavor", "vm") != "vm":
        raise r.fail("flavor", "a VM document is of flavor vm", data.get("flavor"))
    vm = r.get("vm")
    if not isinstance(vm, Mapping):
        raise r.fail("vm", "must be a mapping (the VM's spec)", vm)
    ha, priority, labels = r.boolean("ha", False), r.integer("priority", 0), r.str_map("labels")
    pinned = r.str_set("pinned")
    r.done()
    if "virt" not in cluster.plugins.names:
        raise ValidationError("vm document", "flavor", "the virt flavor is not loaded on this manager", "vm")
    if vm.get("name", name) != name:
        raise ValidationError("vm document", "vm.name", f"must be the document's name {name!r} (or left out)",
                              vm.get("name"))
    virt = importlib.import_module("flavors.virt")
    spec = importlib.import_module("flavors.virt.spec").VMSpec.from_dict(
        {**vm, "name": name, "uuid": vm.get("uuid") or str(uuid.uuid4())}, "vm")
    workload: Workload = virt.vm_workload(spec, ha=ha, priority=priority, labels=dict(labels), pinned=pinned)
    return workload


def define(cluster: Cluster, data: object) -> Workload:
    """Check a workload as ``Cluster.submit`` does, then write its definition
    (:meth:`Cluster.define`); nothing is written when a check refuses."""
    return cluster.define(to_workload(data, cluster))


def _request(api: ApiDep, caller: Caller, kind: str, name: str, params: dict[str, Any] | None = None) -> Operation:
    """An operation on workload ``name``, refused (409) while another one is under way."""
    api.cluster.state.workload(name)  # UnknownWorkload
    busy = api.cache.open_operation(name, WORK)
    if busy is not None:
        raise Refused(f"operation {busy.id} ({busy.kind} of {name}) is {busy.state}: wait for it or cancel it")
    placement = api.cluster.state.placement(name)
    if kind == "start" and placement is not None:
        raise Refused(f"{name} is placed on {placement.value.host} already")
    if kind == "migrate" and placement is None:
        raise Refused(f"{name} is not running: there is nothing to migrate")
    return api.cluster.request(kind, name, params, by=caller.name)


@router.get("", summary="Every workload with its placement")
def list_workloads(api: ApiDep, caller: Viewer) -> Response:
    return Response(api.cache.workloads_json(), media_type="application/json")


@router.get("/{name}", summary="One workload with its placement")
def show_workload(name: str, api: ApiDep, caller: Viewer) -> dict[str, Any]:
    return api.cache.workload(name)


@router.post("", status_code=202, openapi_extra=DOCUMENT,
             summary="Define a workload (JSON or YAML; a VM document too) and have it started: "
                     "{workload, operation}")
def create_workload(data: Document, request: Request, api: ApiDep, caller: Operator) -> dict[str, Any]:
    if isinstance(data, Mapping) and isinstance(data.get("name"), str):
        request.state.subject = f"workload/{data['name']}"
    workload = define(api.cluster, data)
    op = api.cluster.request("start", workload.name, by=caller.name)
    return {"workload": workload_view(workload, None), "operation": operation_view(op)}


@router.post("/{name}/start", status_code=202, summary="Place and start a stopped workload: the operation")
def start_workload(name: str, api: ApiDep, caller: Operator) -> dict[str, Any]:
    return operation_view(_request(api, caller, "start", name))


@router.post("/{name}/stop", status_code=202, summary="Stop a workload (its definition stays): the operation")
def stop_workload(name: str, api: ApiDep, caller: Operator, options: Stop | None = None) -> dict[str, Any]:
    return operation_view(_request(api, caller, "stop", name, {"force": (options or Stop()).force}))


@router.post("/{name}/migrate", status_code=202,
             summary="Move a running workload to target, or where the scheduler says: the operation")
def migrate_workload(name: str, api: ApiDep, caller: Operator, options: Migrate | None = None) -> dict[str, Any]:
    target = (options or Migrate()).target
    if target is not None:
        try:
            api.cluster.state.host(target)
        except UnknownHost:
            raise ValidationError("migration", "target", "no such host", target) from None
    return operation_view(_request(api, caller, "migrate", name, {"target": target} if target else {}))


@router.delete("/{name}", status_code=202, summary="Stop and forget a workload: the operation")
def delete_workload(name: str, api: ApiDep, caller: Operator) -> dict[str, Any]:
    return operation_view(_request(api, caller, "delete", name))
