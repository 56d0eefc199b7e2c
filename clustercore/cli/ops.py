"""``clustercore op list|show|wait|cancel``: the operations long work becomes (maintenance,
migrate, start, stop, delete, upgrade, fence), and ``--wait`` for the commands that start one.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from clustercore.cli import output
from clustercore.cli.base import Parser, Subparsers, api_options, seconds
from clustercore.cli.login import api

if TYPE_CHECKING:
    from clustercore.client import Client

COLUMNS: list[output.Column] = [
    ("ID", lambda op: str(op.get("id", ""))[:8]), ("KIND", "kind"), ("TARGET", "target"), ("STATE", "state"),
    ("%", lambda op: f"{float(op.get('progress') or 0):.0f}"), ("STEP", "step"), ("BY", "by"),
    ("RESULT", lambda op: op.get("error") or op.get("result")),
]
ORDER = ("id", "kind", "target", "state", "progress", "step", "result", "error", "by", "params", "cancel")


def wait_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--wait", action="store_true", help="show its progress until it is done")
    parser.add_argument("--wait-timeout", type=seconds, default=None, metavar="SECONDS",
                        help="stop waiting after this long (exit 1 if it is not done)")


def follow(client: Client, args: argparse.Namespace, op: Mapping[str, Any]) -> int:
    """After an operation was started: wait for it with a progress bar (``--wait``), or say
    how to follow it."""
    if getattr(args, "wait", False):
        with output.progress_bar(args) as update:
            final = client.wait(str(op["id"]), args.wait_timeout, progress=update)
        return output.finished(args, final, args.wait_timeout)
    output.done(args, f"{output.describe(op)} {op.get('state', 'Pending')}: clustercore op wait {op.get('id')}", op)
    return 0


def add(sub: Subparsers[Parser]) -> None:
    op: Parser = sub.add_parser("op", help="operations: long work carried out by the leading manager")
    actions = op.add_subparsers(dest="action", required=True)
    for name, help_, run in (("list", "every operation", op_list), ("show", "one operation", op_show),
                             ("wait", "wait for one with a progress bar", op_wait),
                             ("cancel", "cancel one (maintenance, migrate, upgrade)", op_cancel)):
        action: Parser = actions.add_parser(name, help=help_)
        api_options(action)
        if name != "list":
            action.add_argument("id", help="the operation's id (its first characters are enough)")
        if name == "wait":
            action.add_argument("--wait-timeout", type=seconds, default=None, metavar="SECONDS",
                                help="stop waiting after this long (exit 1 if it is not done)")
        action.set_defaults(run=run)


def resolve(client: Client, prefix: str) -> str:
    """The full id of the operation whose id starts with ``prefix`` (unique, or as given)."""
    if len(prefix) == 32:
        return prefix
    matches = [str(op["id"]) for op in client.operations() if str(op.get("id", "")).startswith(prefix)]
    return matches[0] if len(matches) == 1 else prefix


@api
def op_list(client: Client, args: argparse.Namespace) -> int:
    ops = sorted(client.operations(), key=lambda op: float(op.get("created") or 0))
    output.table(args, ops, COLUMNS)
    return 0


@api
def op_show(client: Client, args: argparse.Namespace) -> int:
    output.show(args, client.operation(resolve(client, args.id)), ORDER)
    return 0


@api
def op_wait(client: Client, args: argparse.Namespace) -> int:
    op_id = resolve(client, args.id)
    with output.progress_bar(args) as update:
        final = client.wait(op_id, args.wait_timeout, progress=update)
    return output.finished(args, final, args.wait_timeout)


@api
def op_cancel(client: Client, args: argparse.Namespace) -> int:
    op = client.cancel_operation(resolve(client, args.id))
    output.done(args, f"{output.describe(op)}: cancel requested ({op.get('state')})", op)
    return 0
