"""``clustercore vm create|list|show|start|stop|migrate|delete`` (also ``clustercore workload``).

``vm create -f FILE`` sends a VM document (docs/vm-spec.md: ``{name, flavor: vm, vm:
{...}, ha, priority, labels}``) or any workload dict, JSON or YAML; the manager validates it,
defines the workload and starts it as an operation, which ``--wait`` follows with a
progress bar. Starting, stopping, migrating and deleting are operations likewise.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from clustercore.cli import output
from clustercore.cli.base import USAGE, CliError, Parser, Subparsers, api_options, read_document
from clustercore.cli.login import api
from clustercore.cli.ops import follow, wait_options

if TYPE_CHECKING:
    from clustercore.client import Client

COLUMNS: list[output.Column] = [
    ("NAME", "name"), ("FLAVOR", "flavor"), ("STATE", "placement.state"), ("HOST", "placement.host"),
    ("CPU", "requests.cpu"), ("MEMORY MiB", "requests.memory"), ("HA", "ha"), ("PRIORITY", "priority"),
]
ORDER = ("name", "flavor", "placement", "requests", "ha", "priority", "labels")


def add(sub: Subparsers[Parser]) -> None:
    vm: Parser = sub.add_parser("vm", aliases=["workload"], help="VMs and other workloads: create, start, migrate...")
    actions = vm.add_subparsers(dest="action", required=True)

    def action(name: str, help_: str, run: Any, named: bool = True, waits: bool = True) -> Parser:
        parser: Parser = actions.add_parser(name, help=help_)
        api_options(parser)
        if named:
            parser.add_argument("name", help="the workload's name")
        if waits:
            wait_options(parser)
        parser.set_defaults(run=run)
        return parser

    create = action("create", "define a VM (or any workload) from a file and start it", vm_create, named=False)
    create.add_argument("-f", "--file", required=True, help="a VM document or workload, JSON or YAML (- for stdin)")
    action("list", "every workload with its placement", vm_list, named=False, waits=False)
    action("show", "one workload in full", vm_show, waits=False)
    action("start", "place and start it", vm_start)
    stop = action("stop", "stop it (its definition stays)", vm_stop)
    stop.add_argument("--force", action="store_true", help="power it off rather than shut it down")
    migrate = action("migrate", "move it live to another host", vm_migrate)
    migrate.add_argument("--to", metavar="HOST", default=None, help="the host (default: the scheduler's choice)")
    action("delete", "stop and forget it", vm_delete)


@api
def vm_create(client: Client, args: argparse.Namespace) -> int:
    document = read_document(args.file)
    if not isinstance(document, dict):
        raise CliError(f"{args.file}: a VM document is a mapping (name, flavor, vm...)", USAGE)
    answer = client.create_workload(document)
    workload, op = answer.get("workload") or {}, answer.get("operation")
    if op is None:
        output.done(args, f"workload {workload.get('name')} defined", answer)
        return 0
    if not getattr(args, "wait", False):
        output.done(args, f"workload {workload.get('name')} defined, {output.describe(op)} "
                          f"{op.get('state')}: clustercore op wait {op.get('id')}", answer)
        return 0
    return follow(client, args, op)


@api
def vm_list(client: Client, args: argparse.Namespace) -> int:
    output.table(args, sorted(client.workloads(), key=lambda w: str(w.get("name"))), COLUMNS)
    return 0


@api
def vm_show(client: Client, args: argparse.Namespace) -> int:
    output.show(args, client.workload(args.name), ORDER)
    return 0


@api
def vm_start(client: Client, args: argparse.Namespace) -> int:
    return follow(client, args, client.start_workload(args.name))


@api
def vm_stop(client: Client, args: argparse.Namespace) -> int:
    return follow(client, args, client.stop_workload(args.name, args.force))


@api
def vm_migrate(client: Client, args: argparse.Namespace) -> int:
    return follow(client, args, client.migrate_workload(args.name, args.to))


@api
def vm_delete(client: Client, args: argparse.Namespace) -> int:
    return follow(client, args, client.delete_workload(args.name))
