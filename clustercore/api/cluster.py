"""``/api/v1``: placements, the scheduler's explain, capacity, a rebalancing dry run, the cluster config."""

from __future__ import annotations

from typing import Annotated, Any

import attrs
from fastapi import APIRouter, Body, Query

from clustercore.errors import UnknownHost

from .context import Admin, ApiDep, Viewer
from .views import capacity_view, row_view

router = APIRouter(tags=["cluster"])


@router.get("/placements", summary="Where every workload is bound, and in which state")
def list_placements(api: ApiDep, caller: Viewer) -> dict[str, Any]:
    return {"placements": api.cache.placements_list()}


@router.get("/explain/{workload}", summary="Why (not) each host: the scheduler's filters and scores for a workload")
def explain(workload: str, api: ApiDep, caller: Viewer,
            host: Annotated[str | None, Query(max_length=253)] = None) -> dict[str, Any]:
    definition = api.reader.state.workload(workload).value
    rows = [row_view(r) for r in api.reader.explain(definition) if host is None or r.host == host]
    if host is not None and not rows:
        raise UnknownHost(host)
    return {"workload": workload, "rows": rows}


@router.get("/capacity", summary="Totals, used and free per resource over the hosts that take workloads; N+1")
def capacity(api: ApiDep, caller: Viewer) -> dict[str, Any]:
    hosts, placed = api.cache.placed()
    return capacity_view(hosts, placed, api.cluster.config)


@router.get("/rebalance", summary="Dry run of rebalancing: the moves a round would make now on measured load")
def rebalance_plan(api: ApiDep, caller: Viewer) -> dict[str, Any]:
    result = api.cluster.rebalance_plan()
    return {"hosts_over": list(result.hosts_over), "score_before": result.before, "score_after": result.after,
            "moves": [attrs.asdict(m) for m in result.moves], "policy": api.cluster.config.rebalance.to_dict()}


@router.get("/config", summary="The cluster config")
def show_config(api: ApiDep, caller: Viewer) -> dict[str, Any]:
    return api.cluster.config.to_dict()


@router.patch("/config", summary="Merge settings into the cluster config (validated whole): the config now")
def configure(changes: Annotated[dict[str, Any], Body()], api: ApiDep, caller: Admin) -> dict[str, Any]:
    return api.cluster.configure(changes).to_dict()
