"""``clustercore agent``: a host's heartbeat, through the API or straight into the store.

Through the API (a host that joins by itself)::

    clustercore agent --api https://10.0.0.5:8443 --fingerprint AB:CD:... \\
        --join cc_join_... --name node3 --address 10.0.0.13

registers the host with its one-time join token (``POST /join``: approved at once), keeps the
heartbeat credential it gets back in ``--credential-file`` (mode 0600; default in the user's
data dir), and then posts a heartbeat every ``--interval`` seconds (``POST
/heartbeats/NAME`` with that credential). Started again, it finds the credential and only
beats (the join token is spent). ``--fingerprint`` pins the manager's self-signed
certificate as ``clustercore login`` does (kept beside the credential); ``--ca`` trusts a CA.

Into the store (a host registered by an admin): ``--store URL --host NAME --credential-file F``
as before. SIGTERM or Ctrl-C stops either cleanly (exit 0, or 130 after Ctrl-C).
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from clustercore.cli.base import (
    ERROR,
    PERMISSION,
    USAGE,
    CliError,
    Parser,
    SignalStop,
    Subparsers,
    code_for_status,
    etcd_options,
    exit_code,
    key_value,
    need,
    open_store_of,
    seconds,
    stop_on_signals,
)
from clustercore.cli.login import write_private
from clustercore.errors import ClusterError

if TYPE_CHECKING:
    from clustercore.client import Client

log = logging.getLogger(__name__)


def add(sub: Subparsers[Parser]) -> dict[str, Parser]:
    agent: Parser = sub.add_parser("agent", help="run a host agent: its heartbeat (through the API or the store)")
    agent.add_argument("--host", "--name", dest="host", required=True, help="the host's name in the cluster")
    agent.add_argument("--interval", type=seconds, default=10.0, help="seconds between heartbeats")
    agent.add_argument("--credential-file", default=None,
                       help="file holding the host's heartbeat credential (issued at registration or join)")
    store = agent.add_argument_group("into the store")
    store.add_argument("--store", default=None, help="etcd://host[:port],host[:port] or etcds://... (TLS)")
    store.add_argument("--prefix", default="/clustercore/", help="the cluster's key prefix in etcd")
    etcd_options(agent)
    store.add_argument("--ttl", type=seconds, default=None, help="heartbeat lease TTL, above the interval "
                                                               "(default 4 intervals)")
    store.add_argument("--watchdog", metavar="DEVICE", default=None,
                       help="arm this watchdog (/dev/watchdog: softdog or hardware) and feed it only while the "
                            "heartbeat lease renews: the host resets itself when cut from the store")
    store.add_argument("--watchdog-timeout", type=int, default=60, metavar="SECONDS",
                       help="the watchdog's timeout (default 60)")
    api = agent.add_argument_group("through the API")
    api.add_argument("--api", metavar="URL", default=None, help="a manager's API, https://HOST:PORT")
    api.add_argument("--join", metavar="TOKEN", default=None, help="a one-time join token (clustercore token create "
                                                                   "--join NAME)")
    api.add_argument("--address", default=None, help="the host's address (at join)")
    api.add_argument("--cpu", type=int, default=None, help="CPUs to offer (default: this machine's)")
    api.add_argument("--memory", type=int, default=None, help="memory to offer in MiB (default: this machine's)")
    api.add_argument("--label", type=key_value, action="append", default=[], metavar="KEY=VALUE")
    api.add_argument("--fingerprint", default=None, help="pin the manager's self-signed certificate")
    api.add_argument("--ca", metavar="FILE", default=None, help="trust this CA (the host name is checked)")
    api.add_argument("--timeout", type=seconds, default=10.0, help="seconds to wait for the API")
    agent.set_defaults(run=run)
    return {"agent": agent}


def check(parser: Parser, args: argparse.Namespace) -> None:
    if (args.store is None) == (args.api is None):
        parser.error("give --store URL (heartbeats into the store) or --api URL (through the API), one of them")
    if args.api is not None and args.ttl is not None:
        parser.error("--ttl is for --store (the API keeps the heartbeat's lease)")
    if args.store is not None and (args.join or args.fingerprint or args.ca):
        parser.error("--join, --fingerprint and --ca are for --api")
    if args.watchdog is not None and args.store is None:
        parser.error("--watchdog is for --store (it is fed while the agent's own lease renews)")
    if not 1 <= args.watchdog_timeout <= 3600:
        parser.error(f"--watchdog-timeout {args.watchdog_timeout} must be within 1..3600 seconds")
    if args.ttl is not None and args.ttl <= args.interval:
        parser.error(f"--ttl {args.ttl:g} must be above --interval {args.interval:g} "
                     "(the heartbeat would expire between beats)")


def run(args: argparse.Namespace) -> int:
    return through_api(args) if args.api else into_store(args)


def into_store(args: argparse.Namespace) -> int:
    from clustercore.agent import HostAgent

    credential = ""
    if args.credential_file:
        try:
            credential = Path(args.credential_file).read_text().strip()
        except OSError as exc:
            raise ClusterError(f"cannot read the credential file: {exc}") from None
    store = open_store_of(args)
    watchdog = None
    if args.watchdog:
        from clustercore.watchdog import DeviceWatchdog

        watchdog = DeviceWatchdog(args.watchdog, args.watchdog_timeout)  # WatchdogError: one clear line
    agent = HostAgent(store, args.host, args.interval, args.ttl, credential=credential, watchdog=watchdog)
    with stop_on_signals() as stop:
        agent.run(stop)
    return exit_code(stop)


def machine() -> dict[str, int]:
    """This machine's CPUs and memory (MiB)."""
    memory = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // (1 << 20)
    return {"cpu": os.cpu_count() or 1, "memory": int(memory)}


def through_api(args: argparse.Namespace) -> int:
    from clustercore.client import ApiError, Client

    if args.credential_file:
        credential_file = Path(args.credential_file)
    else:
        credential_file = Path(need("platformdirs").user_data_dir("clustercore")) / "agent" / f"{args.host}.credential"
    pin = credential_file.with_suffix(".pem")
    ca, pinned = trust(args, pin)
    try:
        if not credential_file.exists():
            if not args.join:
                raise CliError(f"no credential in {credential_file}: give --join TOKEN to join the cluster", USAGE)
            with Client(args.api, args.join, ca, args.timeout, check_hostname=not pinned) as joiner:
                capacity = {**machine(), **{k: v for k, v in (("cpu", args.cpu), ("memory", args.memory)) if v}}
                body: dict[str, Any] = {"name": args.host, "capacity": capacity, "labels": dict(args.label)}
                if args.address:
                    body["address"] = args.address
                answer = joiner.join(body)
            write_private(credential_file, str(answer["credential"]) + "\n")
            print(f"joined as {args.host}; heartbeat credential in {credential_file}", flush=True)
        credential = credential_file.read_text().strip()
        with Client(args.api, credential, ca, args.timeout, check_hostname=not pinned) as client, \
                stop_on_signals() as stop:
            beat_until(client, args.host, args.interval, stop)
    except ApiError as exc:
        raise CliError(str(exc), code_for_status(exc.status) if exc.status else ERROR) from None
    except OSError as exc:
        raise CliError(f"credential file {credential_file}: {exc}") from None
    return exit_code(stop)


def trust(args: argparse.Namespace, pin: Path) -> tuple[str | None, bool]:
    """The certificates to trust and whether they are a pin: ``--ca``; or the manager's
    certificate after checking ``--fingerprint`` (kept at ``pin``); or a pin kept before."""
    from clustercore.client import fingerprint, same_fingerprint, server_certificate

    if args.ca:
        return args.ca, False
    if args.fingerprint:
        pem = server_certificate(args.api, args.timeout)
        seen = fingerprint(pem)
        if not same_fingerprint(seen, args.fingerprint):
            raise CliError(f"{args.api} presents a certificate with fingerprint {seen}, not {args.fingerprint}: "
                           "refused", PERMISSION)
        write_private(pin, pem)
        return str(pin), True
    if pin.exists():
        return str(pin), True
    return None, False


def beat_until(client: Client, host: str, interval: float, stop: SignalStop) -> None:
    """A heartbeat every ``interval`` seconds until ``stop``; a failed one is logged and the
    next one tried (a manager failing over, a network blip)."""
    from clustercore.agent import boot_report
    from clustercore.client import ApiError

    report = boot_report().to_dict()
    failing = False
    while not stop.is_set():
        try:
            client.heartbeat(host, report)
            if failing:
                log.warning("%s: heartbeats accepted again", host)
            failing = False
        except ApiError as exc:
            if not failing or exc.status in (401, 403):
                log.warning("%s: heartbeat refused: %s", host, exc)
            failing = True
        stop.wait(interval)
