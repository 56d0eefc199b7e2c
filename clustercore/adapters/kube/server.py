"""The extender over HTTP: a Starlette app (the API's framework) served by uvicorn.

Routes (kube-scheduler POSTs to ``urlPrefix + "/" + verb``; use these verb names):

* ``POST /filter``, ``POST /prioritize``: ExtenderArgs -> ExtenderFilterResult /
  HostPriorityList;
* ``POST /bind``: ExtenderBindingArgs -> ExtenderBindingResult;
* ``POST /preempt``: ExtenderPreemptionArgs -> ExtenderPreemptionResult;
* ``PUT /nodes``: a NodeList (``kubectl get nodes -o json``) replaces the node cache;
  ``GET /nodes``: how many nodes it holds; ``GET /healthz``: ``ok``.

A malformed request gets 400 (not JSON, a wrong type, a missing Pod...) with
``{"error": message}``, a body over ``max_body`` bytes 413, another method 405: never a
200 that kube-scheduler would take for an answer. An error of the extender itself is 500
with its message. TLS when a certificate and key are given (kube's ``enableHTTPS``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from clustercore.adapters.kube.extender import Extender, node_list_items
from clustercore.adapters.kube.wire import (
    ExtenderArgs,
    ExtenderBindingArgs,
    ExtenderPreemptionArgs,
    binding_result,
    preemption_result,
)
from clustercore.api.server import ThreadedServer
from clustercore.errors import ValidationError

log = logging.getLogger(__name__)

#: Largest request body: 5,000 full Node documents (nodeCacheCapable false) fit easily.
MAX_BODY = 64 * 2**20


class BadRequest(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")  # Python's json takes NaN and Infinity; Go's does not


class _Body:
    def __init__(self, limit: int) -> None:
        self.limit = limit

    async def __call__(self, request: Request) -> Any:
        declared = request.headers.get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.limit):
            raise BadRequest(413, f"request body over {self.limit} bytes")
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > self.limit:
                raise BadRequest(413, f"request body over {self.limit} bytes")
            chunks.append(chunk)
        try:
            return json.loads(b"".join(chunks), parse_constant=_no_constant)
        except (UnicodeDecodeError, ValueError) as exc:
            raise BadRequest(400, f"request body is not JSON: {exc}") from None


Handler = Callable[[Request], Awaitable[Response]]


def _guard(handler: Handler) -> Handler:
    async def run(request: Request) -> Response:
        try:
            return await handler(request)
        except BadRequest as exc:
            return JSONResponse({"error": exc.message}, status_code=exc.status)
        except ValidationError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        except Exception as exc:  # a bug of ours: kube-scheduler must not take it for an answer
            log.exception("extender %s failed", request.url.path)
            return JSONResponse({"error": f"extender error: {type(exc).__name__}: {exc}"}, status_code=500)
    return run


def create_app(extender: Extender, max_body: int = MAX_BODY) -> Starlette:
    body = _Body(max_body)

    async def filter_(request: Request) -> Response:
        text = extender.filter(ExtenderArgs.decode(await body(request))).to_json()
        return Response(text, media_type="application/json")

    async def prioritize(request: Request) -> Response:
        text = extender.prioritize(ExtenderArgs.decode(await body(request))).to_json()
        return Response(text, media_type="application/json")

    async def bind(request: Request) -> Response:
        args = ExtenderBindingArgs.decode(await body(request))
        return JSONResponse(binding_result(await run_in_threadpool(extender.bind, args)))

    async def preempt(request: Request) -> Response:
        return JSONResponse(preemption_result(extender.preempt(ExtenderPreemptionArgs.decode(await body(request)))))

    async def put_nodes(request: Request) -> Response:
        count = await run_in_threadpool(extender.set_nodes, node_list_items(await body(request)))
        return JSONResponse({"nodes": count})

    async def get_nodes(request: Request) -> Response:
        return JSONResponse({"nodes": len(extender.cached_nodes)})

    async def healthz(request: Request) -> Response:
        return PlainTextResponse("ok")

    routes = [Route("/filter", _guard(filter_), methods=["POST"]),
              Route("/prioritize", _guard(prioritize), methods=["POST"]),
              Route("/bind", _guard(bind), methods=["POST"]),
              Route("/preempt", _guard(preempt), methods=["POST"]),
              Route("/nodes", _guard(put_nodes), methods=["PUT"]),
              Route("/nodes", _guard(get_nodes), methods=["GET"]),
              Route("/healthz", healthz, methods=["GET"])]
    app = Starlette(routes=routes)
    app.state.extender = extender
    return app


class ExtenderServer(ThreadedServer):
    """uvicorn in a thread serving :func:`create_app`; HTTPS with ``cert`` and ``key``."""

    name = "extender"

    def __init__(self, extender: Extender, listen: str = "127.0.0.1:8888", cert: Path | None = None,
                 key: Path | None = None, max_body: int = MAX_BODY) -> None:
        super().__init__(create_app(extender, max_body), listen, cert, key)
