"""The ``clustercore`` command: ``clustercore demo``, ``clustercore manager run|status``,
``clustercore agent``."""

from __future__ import annotations

import argparse
import logging
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="clustercore", description="generic cluster management")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at DEBUG")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("demo", help="run a small simulated cluster and tell what happens")
    manager = sub.add_parser("manager", help="run a manager against a store, or show the cluster's status")
    manager.add_argument("action", choices=["run", "status"])
    manager.add_argument("--store", default="memory://", help="memory:// or etcd://host:port,host:port")
    manager.add_argument("--prefix", default="/clustercore/", help="the cluster's key prefix in etcd")
    manager.add_argument("--name", default=None, help="this manager's name (default: host name and pid)")
    manager.add_argument("--ttl", type=float, default=10.0, help="leader lease TTL in seconds")
    manager.add_argument("--interval", type=float, default=1.0, help="seconds between reconcile passes")
    agent = sub.add_parser("agent", help="run a host agent: the host's heartbeat on a store lease")
    agent.add_argument("--store", required=True, help="etcd://host:port,host:port")
    agent.add_argument("--prefix", default="/clustercore/", help="the cluster's key prefix in etcd")
    agent.add_argument("--host", required=True, help="the host's name in the cluster")
    agent.add_argument("--interval", type=float, default=10.0, help="seconds between heartbeats")
    agent.add_argument("--ttl", type=float, default=None, help="heartbeat lease TTL (default 4 intervals)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.command == "demo":
        from clustercore import demo

        return demo.main(sys.stdout)
    if args.command == "manager":
        import os
        import socket

        from clustercore.manager import Manager, open_store, status

        store = open_store(args.store, args.prefix)
        if args.action == "status":
            return status(store, sys.stdout)
        name = args.name or f"{socket.gethostname()}-{os.getpid()}"
        Manager(store, name, ttl=args.ttl).run(args.interval)
        return 0
    if args.command == "agent":
        from clustercore.agent import HostAgent
        from clustercore.manager import open_store

        HostAgent(open_store(args.store, args.prefix), args.host, args.interval, args.ttl).run()
        return 0
    parser.error(f"unknown command {args.command}")
    return 2


if __name__ == "__main__":
    sys.exit(main())
