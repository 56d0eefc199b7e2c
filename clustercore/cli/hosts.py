"""``clustercore host list|show|add|update|approve|activate|reinstall|confirm-down|remove|maintenance``."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from clustercore.cli import output
from clustercore.cli.base import USAGE, CliError, Parser, Subparsers, api_options, key_value, read_document
from clustercore.cli.login import api
from clustercore.cli.ops import follow, wait_options

if TYPE_CHECKING:
    from clustercore.client import Client


def workloads_of(host: Mapping[str, Any]) -> object:
    items = host.get("workloads")
    if isinstance(items, list):
        return [w.get("name") if isinstance(w, Mapping) else w for w in items]
    return items


COLUMNS: list[output.Column] = [
    ("NAME", "name"), ("STATE", "state"), ("REASON", "reason"), ("ADDRESS", "address"),
    ("CPU", "capacity.cpu"), ("MEMORY MiB", "capacity.memory"), ("WORKLOADS", workloads_of),
]
ORDER = ("name", "state", "reason", "since", "address", "capacity", "allocatable", "labels", "workloads",
         "load", "self_fence", "watchdog")
ACTIONS = {  # command: (Client method, what was done, help)
    "approve": ("approve_host", "approved", "let a PendingApproval host join (Installing)"),
    "activate": ("activate_host", "activated", "bring a host out of Maintenance (Initializing, then Up)"),
    "reinstall": ("reinstall_host", "sent to reinstall", "bootstrap a host again (from InstallFailed, Maintenance)"),
    "confirm-down": ("confirm_down", "confirmed down", "vouch that a NonResponsive host is off (no fence device)"),
}


def add(sub: Subparsers[Parser]) -> None:
    host: Parser = sub.add_parser("host", help="hosts: list, add, approve, update, maintenance, remove...")
    actions = host.add_subparsers(dest="action", required=True)

    def action(name: str, help_: str, run: Any, named: bool = True) -> Parser:
        parser: Parser = actions.add_parser(name, help=help_)
        api_options(parser)
        if named:
            parser.add_argument("name", help="the host's name")
        parser.set_defaults(run=run)
        return parser

    action("list", "every host with its state, reason and workloads", host_list, named=False)
    action("show", "one host in full", host_show)
    new = action("add", "register a host (from a file, or from flags)", host_add, named=False)
    new.add_argument("name", nargs="?", help="its name (without -f)")
    definition_options(new)
    update = action("update", "change a host: capacity, address, labels, fence devices, taints", host_update)
    definition_options(update)
    update.add_argument("--unlabel", action="append", default=[], metavar="KEY", help="remove a label")
    for name, (_, _, help_) in ACTIONS.items():
        action(name, help_, host_transition)
    action("remove", "forget a host (PendingApproval, InstallFailed, Maintenance or Down, no workloads)", host_remove)
    maintenance = action("maintenance", "drain a host into Maintenance (an operation), or --cancel it",
                         host_maintenance)
    maintenance.add_argument("--stop-unmovable", action="store_true",
                             help="stop the workloads that cannot move instead of refusing")
    maintenance.add_argument("--cancel", action="store_true", help="cancel a maintenance under way")
    wait_options(maintenance)


def definition_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-f", "--file", default=None, help="a JSON or YAML document (- for stdin)")
    parser.add_argument("--address", default=None, help="the host's address")
    parser.add_argument("--cpu", type=int, default=None, help="CPUs")
    parser.add_argument("--memory", type=int, default=None, help="memory in MiB")
    parser.add_argument("--label", type=key_value, action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--self-fence", choices=("on", "off", "auto"), default=None,
                        help="whether its watchdog's reset counts as fenced (auto: only without a fence device)")


def definition(args: argparse.Namespace, base: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The host fields the file and the flags give (flags win); labels merged into ``base``'s."""
    data: dict[str, Any] = {}
    if args.file:
        document = read_document(args.file)
        if not isinstance(document, dict):
            raise CliError(f"{args.file}: a host is a mapping of its fields", USAGE)
        data.update(document)
    if args.address is not None:
        data["address"] = args.address
    if getattr(args, "self_fence", None) is not None:
        data["self_fence"] = {"on": True, "off": False, "auto": None}[args.self_fence]
    if args.cpu is not None or args.memory is not None:
        capacity = dict(data.get("capacity") or (base or {}).get("capacity") or {})
        capacity.update({k: v for k, v in (("cpu", args.cpu), ("memory", args.memory)) if v is not None})
        data["capacity"] = capacity
    unlabel = getattr(args, "unlabel", [])
    if args.label or unlabel:
        labels = dict(data.get("labels") or (base or {}).get("labels") or {})
        labels.update(args.label)
        for key in unlabel:
            labels.pop(key, None)
        data["labels"] = labels
    return data


@api
def host_list(client: Client, args: argparse.Namespace) -> int:
    output.table(args, sorted(client.hosts(), key=lambda h: str(h.get("name"))), COLUMNS)
    return 0


@api
def host_show(client: Client, args: argparse.Namespace) -> int:
    output.show(args, client.host(args.name), ORDER)
    return 0


@api
def host_add(client: Client, args: argparse.Namespace) -> int:
    data = definition(args)
    if args.name:
        data["name"] = args.name
    if not data.get("name"):
        raise CliError("name the host: clustercore host add NAME, or a name in the -f file", USAGE)
    answer = client.add_host(data)
    host = answer.get("host", answer)
    credential = answer.get("credential")
    output.done(args, f"host {host.get('name')} registered: {host.get('state')}" +
                (f"\nheartbeat credential (shown once, for clustercore agent --credential-file): {credential}"
                 if credential else ""), answer)
    return 0


@api
def host_update(client: Client, args: argparse.Namespace) -> int:
    base = client.host(args.name) if args.label or args.unlabel or args.cpu is not None or args.memory is not None \
        else None
    changes = definition(args, base)
    changes.pop("name", None)
    if not changes:
        raise CliError("nothing to change: give -f FILE, --address, --cpu, --memory, --label, --unlabel or "
                       "--self-fence", USAGE)
    host = client.update_host(args.name, changes)
    output.done(args, f"host {args.name} updated: {', '.join(sorted(changes))}", host)
    return 0


@api
def host_transition(client: Client, args: argparse.Namespace) -> int:
    method, said, _ = ACTIONS[args.action]
    host = getattr(client, method)(args.name)
    state = host.get("state") if isinstance(host, Mapping) else None
    output.done(args, f"host {args.name} {said}" + (f": now {state}" if state else ""), host)
    return 0


@api
def host_remove(client: Client, args: argparse.Namespace) -> int:
    client.remove_host(args.name)
    output.done(args, f"host {args.name} removed", {"removed": args.name})
    return 0


@api
def host_maintenance(client: Client, args: argparse.Namespace) -> int:
    if args.cancel:
        if args.stop_unmovable or args.wait:
            raise CliError("--cancel takes neither --stop-unmovable nor --wait", USAGE)
        answer = client.cancel_maintenance(args.name)
        output.done(args, f"maintenance of {args.name} cancelled", answer)
        return 0
    op = client.start_maintenance(args.name, args.stop_unmovable)
    return follow(client, args, op)
