"""A TCP link the lab can cut: ``127.0.0.1:port`` relayed to a server (etcd), so that one
host's agent loses the store while everything else still reaches it (a partition).

:meth:`TcpRelay.cut` closes every relayed connection and refuses new ones (connection
refused at once, as a dead link's firewall rejects); :meth:`TcpRelay.heal` listens again.
"""

from __future__ import annotations

import contextlib
import socket
import socketserver
import threading
from typing import Any

__all__ = ["TcpRelay"]


class _Pipe(socketserver.BaseRequestHandler):
    server: _Server

    def handle(self) -> None:
        client: socket.socket = self.request
        try:
            upstream = socket.create_connection(self.server.target, timeout=5)
        except OSError:
            return
        upstream.settimeout(None)
        with self.server.lock:
            self.server.open.update((client, upstream))
        try:
            back = threading.Thread(target=_pump, args=(upstream, client), daemon=True)
            back.start()
            _pump(client, upstream)
            back.join()
        finally:
            with self.server.lock:
                self.server.open.difference_update((client, upstream))
            upstream.close()


def _pump(source: socket.socket, sink: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while data := source.recv(65536):
            sink.sendall(data)
    for sock in (source, sink):
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


class _Server(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True

    def __init__(self, port: int, target: tuple[str, int]) -> None:
        self.target = target
        self.open: set[socket.socket] = set()
        self.lock = threading.Lock()
        super().__init__(("127.0.0.1", port), _Pipe)


class TcpRelay:
    def __init__(self, port: int, target: tuple[str, int]) -> None:
        self.port, self.target = port, target
        self._server: _Server | None = None
        self.heal()

    def heal(self) -> None:
        if self._server is None:
            self._server = _Server(self.port, self.target)
            threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True).start()

    def cut(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        with server.lock:
            for sock in server.open:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    close = cut

    def __enter__(self) -> TcpRelay:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.cut()
