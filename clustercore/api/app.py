"""``create_app(manager_or_cluster)``: the FastAPI application of one manager.

Routes live under ``/api/v1/`` (one module per resource group: hosts, workloads, events,
operations, tokens and the hosts' own calls, cluster-wide reads and config), the OpenAPI
document at ``/api/v1/openapi.json`` (each operation says who may call it in
``x-clustercore-auth``), the metrics at ``/metrics`` (viewer), and the dashboard at ``/``
(the files of ``clustercore/api/static/``, served when the directory is there).
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, FastAPI, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.routing import APIRoute
from fastapi.staticfiles import StaticFiles

from clustercore.cluster import Cluster
from clustercore.manager import Manager
from clustercore.metrics import CONTENT_TYPE, Metrics
from clustercore.store.base import Store

from . import cluster, errors, events, hosts, operations, tokens, workloads
from .context import Api, ApiDep, Viewer, route_guard

PREFIX = "/api/v1"
MAX_BODY = 1 << 20  # 1 MiB
STATIC = Path(__file__).parent / "static"
AUTH_KEY = "x-clustercore-auth"

metrics_router = APIRouter(tags=["metrics"])


@metrics_router.get("/metrics", response_class=Response,
                    summary="Prometheus metrics (text exposition format); needs a viewer token")
async def metrics(api: ApiDep, caller: Viewer) -> Response:
    body = await run_in_threadpool(api.metrics.render)
    return Response(body, media_type=CONTENT_TYPE)


def _annotated(router: APIRouter) -> APIRouter:
    """``router`` with each operation saying who may call it (``x-clustercore-auth``: a
    role, ``join-token``, ``host-credential`` or ``none``), taken from its Guard."""
    for route in router.routes:
        if isinstance(route, APIRoute):
            found = route_guard(route.dependant)
            route.openapi_extra = {**(route.openapi_extra or {}), AUTH_KEY: found.label if found else "none"}
    return router


def create_app(target: Manager | Cluster, auth: Store | None = None, metrics: Metrics | None = None,
               static: Path | None = STATIC) -> FastAPI:
    """The API of ``target`` (a Manager: reads from its caches, writes through its
    :attr:`~clustercore.manager.Manager.operator`; or a lone Cluster). ``auth``: the store
    holding the API tokens (default: the cluster's); ``metrics``: a registry to serve (one
    made for it by default)."""
    app = FastAPI(title="clustercore", version="1", max_body_size=MAX_BODY, openapi_url=f"{PREFIX}/openapi.json",
                  docs_url=f"{PREFIX}/docs", redoc_url=None,
                  description="The operator's API of a clustercore cluster: hosts, workloads, events, operations, "
                              "tokens. Errors are {error, message, field}; see docs/api.md.")
    app.state.api = Api(target, metrics, tokens=auth)
    errors.install(app)
    for module in (hosts, workloads, events, operations, tokens, cluster):
        app.include_router(_annotated(module.router), prefix=PREFIX)
    app.include_router(_annotated(metrics_router))
    if static is not None and static.is_dir():
        app.mount("/", StaticFiles(directory=static, html=True), name="dashboard")
    return app
