"""The operator's HTTP API, served by every manager (``clustercore manager run --listen``).

========================  ==============================================================
module                    concept
========================  ==============================================================
``app``                   ``create_app(manager_or_cluster)``: the FastAPI application
``context``               the cluster behind it, the Guard admitting each call, audit
``cache``                 reads from watches (informers), JSON kept per revision
``errors``                every failure as ``{error, message, field}`` with its status
``views``                 what is shown of each object, secrets left out
``hosts`` ``workloads``   ``/hosts``, ``/workloads``
``events``                ``/events`` and its server-sent stream
``operations``            ``/operations``: progress, cancel, wait
``tokens``                ``/tokens``, ``/tokens/join``, ``/join``, ``/heartbeats``, ``/whoami``
``cluster``               ``/placements``, ``/explain``, ``/capacity``, ``/config``
``server`` ``tls``        uvicorn in a thread over TLS, the self-signed certificate
========================  ==============================================================

Needs the ``api`` extra: without it, importing this package raises ImportError naming
``pip install 'clustercore[api]'``. Documented for operators in ``docs/api.md``.
"""

from __future__ import annotations

API_EXTRA = "pip install 'clustercore[api]'"
try:
    import fastapi  # noqa: F401
    import prometheus_client  # noqa: F401
    import uvicorn  # noqa: F401
    import yaml  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on what is installed
    raise ImportError(f"the HTTP API needs the api extra ({exc}): {API_EXTRA}", name=exc.name) from exc

from clustercore.api.app import create_app  # noqa: E402
from clustercore.api.server import ApiServer, serve_manager  # noqa: E402

__all__ = ["API_EXTRA", "ApiServer", "create_app", "serve_manager"]
