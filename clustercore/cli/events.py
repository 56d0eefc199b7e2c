"""``clustercore events [--follow]`` and ``clustercore explain WORKLOAD [--host H]``.

``events --follow`` prints each event as the manager records it (server-sent events) until
Ctrl-C (exit 130); with ``-o json`` one JSON object a line.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from clustercore.cli import output
from clustercore.cli.base import Parser, Subparsers, api_options
from clustercore.cli.login import api

if TYPE_CHECKING:
    from clustercore.client import Client

UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
AGO_RE = re.compile(r"\A(\d+(?:\.\d+)?)([smhd])\Z")


def since(text: str) -> float:
    """An argparse type: a time, as seconds since the epoch or as an age (``90s``, ``5m``, ``2h``, ``1d``)."""
    match = AGO_RE.match(text)
    if match:
        return time.time() - float(match.group(1)) * UNITS[match.group(2)]
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a time: {text!r} (seconds since the epoch, or 5m, 2h...)") from None
    if not 0 <= value < 1e11:
        raise argparse.ArgumentTypeError(f"not a time: {text!r}")
    return value


def when(event: Mapping[str, Any]) -> str:
    return output.when(event.get("time")) if event.get("time") is not None else ""


def change(event: Mapping[str, Any]) -> str:
    old, new = event.get("old") or "", event.get("new") or ""
    return f"{old or '(none)'} -> {new or '(none)'}" if old or new else ""


def line(event: Mapping[str, Any]) -> str:
    """An event as one line: ``2024-05-01 12:00:00 host/node1: maintenance Up -> ... (reason)``."""
    text = f"{when(event)} {event.get('subject')}: {event.get('kind')}"
    if change(event):
        text += f" {change(event)}"
    reason = event.get("reason")
    return text + (f" ({reason})" if reason else "")


COLUMNS: list[output.Column] = [("TIME", when), ("SUBJECT", "subject"), ("KIND", "kind"), ("CHANGE", change),
                                ("REASON", "reason")]
EXPLAIN: list[output.Column] = [("HOST", "host"), ("PASSES", "passes"), ("SCORE", "score"), ("CHOSEN", "chosen"),
                                ("WHY NOT", "reason")]


def add(sub: Subparsers[Parser]) -> None:
    events: Parser = sub.add_parser("events", help="what happened (--follow: as it happens)")
    api_options(events)
    events.add_argument("--follow", "-F", action="store_true", help="print events as they come, until Ctrl-C")
    events.add_argument("--subject", default=None, help="host/NAME, workload/NAME or cluster")
    events.add_argument("--kind", default=None, help="one kind of event (heartbeat-missed, migrated...)")
    events.add_argument("--since", type=since, default=None, help="seconds since the epoch, or an age: 5m, 2h")
    events.add_argument("--limit", type=int, default=None, help="the newest N at most")
    events.set_defaults(run=events_run)
    explain: Parser = sub.add_parser("explain", help="why a workload is (not) placed on each host")
    api_options(explain)
    explain.add_argument("workload")
    explain.add_argument("--host", default=None, help="only this host's row")
    explain.set_defaults(run=explain_run)


@api
def events_run(client: Client, args: argparse.Namespace) -> int:
    if not args.follow:
        output.table(args, client.events(args.subject, args.kind, args.since, args.limit), COLUMNS)
        return 0
    for event in client.stream_events(args.subject, args.kind, args.since):
        sys.stdout.write((json.dumps(event) if output.as_json(args) else line(event)) + "\n")
        sys.stdout.flush()
    return 0


@api
def explain_run(client: Client, args: argparse.Namespace) -> int:
    output.table(args, client.explain(args.workload, args.host), EXPLAIN)
    return 0
