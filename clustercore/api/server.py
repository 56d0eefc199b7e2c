"""The API server: uvicorn in a thread of the manager's process, always over TLS.

``ThreadedServer``: an ASGI app served by uvicorn in a thread (the API and the Kubernetes
extender, :mod:`clustercore.adapters.kube.server`, both are one).
``ApiServer(app, listen="127.0.0.1:8443", cert=None, key=None, state_dir=...)``: with no
``cert``/``key`` a self-signed certificate is made once under ``state_dir`` and reused
(:mod:`clustercore.api.tls`). ``start()`` returns once the server listens (port 0 picks a
free one: see ``url``); ``stop()`` lets the requests under way finish (a few seconds at
most) and ends it. :func:`serve_manager` is what ``clustercore manager run --listen`` calls.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any, Self

import uvicorn
from fastapi import FastAPI

from clustercore.errors import ValidationError

from .tls import ensure_certificate, fingerprint

log = logging.getLogger(__name__)


def split_listen(listen: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:8443`` for IPv6) as (host, port)."""
    host, sep, port = listen.rpartition(":")
    host = host.strip("[]")
    if not sep or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ValidationError("listen address", "listen", "must be HOST:PORT", listen)
    return host or "0.0.0.0", int(port)


class ThreadedServer:
    """An ASGI ``app`` served by uvicorn in a thread of this process, over TLS with ``cert``
    and ``key``: ``start()`` returns once it listens (port 0 picks a free one: see ``url``),
    ``stop()`` lets the requests under way finish (a few seconds at most) and ends it."""

    name = "server"

    def __init__(self, app: Any, listen: str, cert: Path | None = None, key: Path | None = None) -> None:
        if (cert is None) != (key is None):
            raise ValidationError(self.name, "cert", "a certificate and its key go together", str(cert or key))
        self.app = app
        self.host, self.port = split_listen(listen)
        self.cert, self.key = cert, key
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host = self.host if self.host not in ("0.0.0.0", "::") else "127.0.0.1"
        return f"{'https' if self.cert else 'http'}://{f'[{host}]' if ':' in host else host}:{self.port}"

    def start(self, timeout: float = 10.0) -> Self:
        tls: dict[str, Any] = {"ssl_certfile": str(self.cert), "ssl_keyfile": str(self.key)} if self.cert else {}
        config = uvicorn.Config(self.app, host=self.host, port=self.port, log_level="warning", lifespan="off",
                                timeout_graceful_shutdown=3, server_header=False, **tls)
        server = self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=server.run, name=f"clustercore-{self.name}", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise OSError(f"the {self.name} did not start on {self.host}:{self.port}")
            time.sleep(0.02)
        if self.port == 0:
            self.port = server.servers[0].sockets[0].getsockname()[1]
        log.info("%s at %s", self.name, self.url)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(10)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


class ApiServer(ThreadedServer):
    """The API, always over TLS (a self-signed certificate under ``state_dir`` when none is given)."""

    name = "API server"

    def __init__(self, app: FastAPI, listen: str = "127.0.0.1:8443", cert: Path | None = None,
                 key: Path | None = None, state_dir: Path | None = None) -> None:
        super().__init__(app, listen, cert, key)
        if self.cert is None or self.key is None:
            self.cert, self.key = ensure_certificate(state_dir or Path.cwd() / "clustercore-state", self.host)
        self.fingerprint = fingerprint(self.cert)
        log.info("API certificate sha256 %s", self.fingerprint)

    def stop(self) -> None:
        super().stop()
        api = getattr(self.app.state, "api", None)
        if api is not None:
            api.close()


def serve_manager(manager: Any, listen: str = "127.0.0.1:8443", cert: Path | None = None, key: Path | None = None,
                  state_dir: Path | None = None) -> ApiServer:
    """Serve ``manager``'s API (started; stop it with ``.stop()``)."""
    from .app import create_app

    return ApiServer(create_app(manager), listen, cert, key, state_dir).start()
