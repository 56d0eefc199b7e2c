"""``clustercore demo`` and ``clustercore manager run|status|clear-leader``.

``manager run --listen HOST:PORT`` also serves the HTTP API (the ``api`` extra) from this
manager: with ``--cert``/``--key``, or else a self-signed certificate made once under
``--state-dir`` and reused. It prints the API's URL and the certificate's SHA-256
fingerprint, which ``clustercore login --fingerprint`` checks. On a memory store, which
lives inside this process where ``token create --store`` cannot reach it, it also makes and
prints an admin token for the run.
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from clustercore.cli.base import (
    Parser,
    Subparsers,
    etcd_options,
    exit_code,
    need,
    open_store_of,
    seconds,
    stop_on_signals,
)
from clustercore.errors import StoreAccessError, StoreError

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from clustercore.api.server import ApiServer
    from clustercore.manager import Manager


def add(sub: Subparsers[Parser]) -> dict[str, Parser]:
    demo: Parser = sub.add_parser("demo", help="run a small simulated cluster and tell what happens")
    demo.set_defaults(run=run_demo)
    manager: Parser = sub.add_parser("manager", help="run a manager against a store, or show the cluster's status")
    manager.add_argument("action", choices=["run", "status", "clear-leader"])
    manager.add_argument("--store", default="memory://", help="memory://, etcd://host[:port],host[:port] or "
                         "etcds://... (TLS)")
    manager.add_argument("--prefix", default="/clustercore/", help="the cluster's key prefix in etcd")
    etcd_options(manager)
    manager.add_argument("--name", default=None, help="this manager's name (default: host name and pid)")
    manager.add_argument("--ttl", type=seconds, default=10.0, help="leader lease TTL in seconds")
    manager.add_argument("--interval", type=seconds, default=1.0, help="seconds between reconcile passes")
    manager.add_argument("--pass-limit", type=seconds, default=None,
                         help="a pass running longer gives the leadership up (default: a third of the TTL)")
    manager.add_argument("--listen", metavar="HOST:PORT", default=None,
                         help="serve the HTTP API there (run only; needs the api extra)")
    manager.add_argument("--cert", metavar="FILE", default=None, help="the API's TLS certificate (PEM)")
    manager.add_argument("--key", metavar="FILE", default=None, help="its private key (PEM)")
    manager.add_argument("--state-dir", metavar="DIR", default=None,
                         help="where the self-signed certificate is kept (default: the user's state dir)")
    manager.set_defaults(run=run_manager)
    return {"manager": manager}


def check(parser: Parser, args: argparse.Namespace) -> None:
    """Argument rules argparse cannot say."""
    if (args.cert is None) != (args.key is None):
        parser.error("--cert and --key go together")
    if args.listen is None and (args.cert or args.state_dir):
        parser.error("--cert, --key and --state-dir need --listen")
    if args.listen is not None and args.action != "run":
        parser.error(f"--listen is for manager run, not {args.action}")


def run_demo(args: argparse.Namespace) -> int:
    from clustercore import demo

    return demo.main(sys.stdout)


def run_manager(args: argparse.Namespace) -> int:
    from clustercore.manager import Manager, status

    store = open_store_of(args)
    if args.action == "run":  # a store that refuses us (TLS, credentials) ends here in one line
        try:
            _ = store.revision
        except StoreAccessError:
            raise
        except StoreError as exc:  # down: waited for, as the manager waits for it whenever it is
            log.warning("the store does not answer yet: %s", exc)
    if args.action == "status":
        return status(store, sys.stdout)
    if args.action == "clear-leader":
        from clustercore.leadership import clear_stale

        cleared = clear_stale(store)
        print(f"cleared the stale leader key of {cleared}" if cleared else
              "nothing to clear: the leader key is absent or on a lease (it expires with it)")
        return 0
    name = args.name or f"{socket.gethostname()}-{os.getpid()}"
    manager = Manager(store, name, ttl=args.ttl, pass_limit=args.pass_limit, freeze_memory=True)
    server = serve(manager, args) if args.listen else None
    try:
        with stop_on_signals() as stop:
            manager.run(args.interval, stop)
    finally:
        if server is not None:
            server.stop()
    return exit_code(stop)


def serve(manager: Manager, args: argparse.Namespace) -> ApiServer:
    """Start the API server of ``manager`` as the arguments say; print where it listens,
    its certificate's fingerprint and, on a memory store (nobody else can reach it), an
    admin token made for this run."""
    need("fastapi")
    from clustercore.api.server import serve_manager

    if args.state_dir is not None:
        state_dir = Path(args.state_dir)
    else:
        state_dir = Path(need("platformdirs").user_state_dir("clustercore")) / "manager"
    cert = Path(args.cert) if args.cert else None
    key = Path(args.key) if args.key else None
    server = serve_manager(manager, listen=args.listen, cert=cert, key=key, state_dir=state_dir)
    print(f"API: {server.url}", flush=True)
    print(f"certificate sha256 fingerprint: {server.fingerprint}", flush=True)
    if args.store.startswith("memory://"):
        from clustercore.auth import create_token

        print(f"admin token (memory store, this run only): {create_token(manager.store, 'admin', 'admin')}",
              flush=True)
    return server
