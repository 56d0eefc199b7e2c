"""The ``clustercore`` command: ``clustercore demo``, ``clustercore manager run|status``,
``clustercore agent``.

Every error is one line on stderr (``clustercore: error: ...``) and a non-zero exit code,
never a traceback: 2 for bad arguments, 1 for an error while running (a bad store URL, a
missing extra, an unreachable store, any :class:`~clustercore.errors.ClusterError`), 130
for Ctrl-C. ``-v`` logs at DEBUG, with the traceback of an unexpected error.

``manager run`` and ``agent`` stop at SIGTERM or SIGINT: the pass under way ends, a leading
manager resigns at once (a follower takes over without waiting for the lease TTL), and the
command exits 0 (130 after SIGINT). A second signal while stopping interrupts the stop.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import math
import signal
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import NoReturn

from clustercore.errors import ClusterError

log = logging.getLogger(__name__)
INTERRUPTED = 128 + signal.SIGINT  # the shell's code for a command ended by Ctrl-C


class Parser(argparse.ArgumentParser):
    """argparse, with an error as one line (``-h`` shows the usage); ``commands`` holds the
    subcommands' parsers by name."""

    commands: dict[str, Parser]

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def seconds(text: str) -> float:
    """An argparse type: a finite number of seconds above 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a finite number of seconds > 0, got {text!r}")
    return value


class SignalStop(threading.Event):
    """A stop event that SIGTERM or SIGINT sets; ``signum`` says which one did."""

    signum: int | None = None


@contextlib.contextmanager
def stop_on_signals() -> Iterator[SignalStop]:
    """A :class:`SignalStop` set by SIGTERM and SIGINT while inside (only the main thread
    can take signals); the previous handlers come back afterwards. A second signal while
    stopping raises KeyboardInterrupt."""
    stop = SignalStop()

    def handler(signum: int, frame: FrameType | None) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        stop.signum = signum  # no logging here: a handler may interrupt a write to the same stream
        stop.set()

    previous = {}
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGTERM, signal.SIGINT):
            previous[signum] = signal.signal(signum, handler)
    try:
        yield stop
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)
        if stop.signum is not None:
            log.info("stopped by %s", signal.Signals(stop.signum).name)


def exit_code(stop: SignalStop) -> int:
    return INTERRUPTED if stop.signum == signal.SIGINT else 0


def parser() -> Parser:
    top = Parser(prog="clustercore", description="generic cluster management")
    top.add_argument("-v", "--verbose", action="store_true", help="log at DEBUG")
    sub = top.add_subparsers(dest="command", required=True)
    sub.add_parser("demo", help="run a small simulated cluster and tell what happens")
    manager: Parser = sub.add_parser("manager", help="run a manager against a store, or show the cluster's status")
    manager.add_argument("action", choices=["run", "status", "clear-leader"])
    manager.add_argument("--store", default="memory://", help="memory:// or etcd://host[:port],host[:port]")
    manager.add_argument("--prefix", default="/clustercore/", help="the cluster's key prefix in etcd")
    manager.add_argument("--name", default=None, help="this manager's name (default: host name and pid)")
    manager.add_argument("--ttl", type=seconds, default=10.0, help="leader lease TTL in seconds")
    manager.add_argument("--interval", type=seconds, default=1.0, help="seconds between reconcile passes")
    manager.add_argument("--pass-limit", type=seconds, default=None,
                         help="a pass running longer gives the leadership up (default: a third of the TTL)")
    agent: Parser = sub.add_parser("agent", help="run a host agent: the host's heartbeat on a store lease")
    agent.add_argument("--store", required=True, help="etcd://host[:port],host[:port]")
    agent.add_argument("--prefix", default="/clustercore/", help="the cluster's key prefix in etcd")
    agent.add_argument("--host", required=True, help="the host's name in the cluster")
    agent.add_argument("--interval", type=seconds, default=10.0, help="seconds between heartbeats")
    agent.add_argument("--ttl", type=seconds, default=None, help="heartbeat lease TTL, above the interval "
                                                                "(default 4 intervals)")
    agent.add_argument("--credential-file", default=None,
                       help="file holding the host's heartbeat credential (issued at registration)")
    top.commands = {"manager": manager, "agent": agent}
    return top


def main(argv: list[str] | None = None) -> int:
    top = parser()
    args = top.parse_args(argv)
    if args.command == "agent" and args.ttl is not None and args.ttl <= args.interval:
        top.commands["agent"].error(f"--ttl {args.ttl:g} must be above --interval {args.interval:g} "
                  "(the heartbeat would expire between beats)")
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return run(args)
    except KeyboardInterrupt:
        return INTERRUPTED
    except (ClusterError, ImportError, ValueError, OSError) as exc:
        return fail(str(exc))
    except Exception as exc:  # a bug: still one line; -v shows where
        log.debug("unexpected error", exc_info=True)
        return fail(f"unexpected {type(exc).__name__}: {exc} (-v shows the traceback)")


def fail(message: str) -> int:
    line = "; ".join(part.strip() for part in message.splitlines() if part.strip())
    sys.stderr.write(f"clustercore: error: {line}\n")
    return 1


def run(args: argparse.Namespace) -> int:
    from clustercore.store.url import open_store

    if args.command == "demo":
        from clustercore import demo

        return demo.main(sys.stdout)
    if args.command == "manager":
        import os
        import socket

        from clustercore.manager import Manager, status

        store = open_store(args.store, args.prefix)
        if args.action == "status":
            return status(store, sys.stdout)
        if args.action == "clear-leader":
            from clustercore.leadership import clear_stale

            cleared = clear_stale(store)
            print(f"cleared the stale leader key of {cleared}" if cleared else
                  "nothing to clear: the leader key is absent or on a lease (it expires with it)")
            return 0
        name = args.name or f"{socket.gethostname()}-{os.getpid()}"
        manager = Manager(store, name, ttl=args.ttl, pass_limit=args.pass_limit)
        with stop_on_signals() as stop:
            manager.run(args.interval, stop)
        return exit_code(stop)
    from clustercore.agent import HostAgent

    credential = ""
    if args.credential_file:
        try:
            credential = Path(args.credential_file).read_text().strip()
        except OSError as exc:
            raise ClusterError(f"cannot read the credential file: {exc}") from None
    agent = HostAgent(open_store(args.store, args.prefix), args.host, args.interval, args.ttl,
                      credential=credential)
    with stop_on_signals() as stop:
        agent.run(stop)
    return exit_code(stop)


if __name__ == "__main__":
    sys.exit(main())
