"""``clustercore whoami`` and ``clustercore cluster config|configure|capacity|placements``:
the cluster as a whole.

``cluster configure fencing.enabled=false drain_parallel=3`` merges those settings into the
cluster config (values read as JSON when they parse, dotted keys nest); the manager
validates the result and names the field it refuses.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from clustercore.cli import output
from clustercore.cli.base import USAGE, CliError, Parser, Subparsers, api_options, key_value, read_document, scalar
from clustercore.cli.login import api

if TYPE_CHECKING:
    from clustercore.client import Client

RESOURCES: list[output.Column] = [("RESOURCE", "resource"), ("TOTAL", "total"), ("USED", "used"), ("FREE", "free")]
PLACEMENTS: list[output.Column] = [("WORKLOAD", "workload"), ("HOST", "host"), ("STATE", "state"),
                                   ("TARGET", "target"), ("REASON", "reason")]


MOVES: list[output.Column] = [("WORKLOAD", "workload"), ("FROM", "source"), ("TO", "target"),
                              ("SCORE BEFORE", "before"), ("SCORE AFTER", "after")]


def add(sub: Subparsers[Parser]) -> None:
    whoami: Parser = sub.add_parser("whoami", help="the name and role of the token in use")
    api_options(whoami)
    whoami.set_defaults(run=whoami_run)
    cluster: Parser = sub.add_parser("cluster", help="the cluster config, capacity and placements")
    actions = cluster.add_subparsers(dest="action", required=True)
    for name, help_, run in (("config", "the cluster config (merged, validated)", config_run),
                             ("capacity", "totals and free per resource, N+1 headroom", capacity_run),
                             ("placements", "where every workload is placed", placements_run),
                             ("rebalance", "dry run: what rebalancing would move now, on measured load",
                              rebalance_run)):
        parser: Parser = actions.add_parser(name, help=help_)
        api_options(parser)
        parser.set_defaults(run=run)
    configure: Parser = actions.add_parser("configure", help="merge settings into the cluster config (admin)")
    api_options(configure)
    configure.add_argument("settings", nargs="*", type=key_value, metavar="KEY=VALUE",
                           help="dotted keys nest (fencing.enabled=false); values are JSON when they parse")
    configure.add_argument("-f", "--file", default=None, help="a JSON or YAML document of settings")
    configure.set_defaults(run=configure_run)


def nested(settings: list[tuple[str, str]], base: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """``[("a.b", "1")]`` -> ``{"a": {"b": 1}}``, merged into a copy of ``base``."""
    out: dict[str, Any] = dict(base or {})
    for key, value in settings:
        parts = key.split(".")
        if not all(parts):
            raise CliError(f"not a setting: {key!r}", USAGE)
        node = out
        for part in parts[:-1]:
            child = node.get(part)
            node[part] = child = dict(child) if isinstance(child, Mapping) else {}
            node = child
        node[parts[-1]] = scalar(value)
    return out


@api
def whoami_run(client: Client, args: argparse.Namespace) -> int:
    me = client.whoami()
    output.done(args, f"{me.get('name')} ({me.get('role')}) at {client.url}", me)
    return 0


@api
def config_run(client: Client, args: argparse.Namespace) -> int:
    output.show(args, client.config())
    return 0


@api
def configure_run(client: Client, args: argparse.Namespace) -> int:
    base = read_document(args.file) if args.file else {}
    if not isinstance(base, Mapping):
        raise CliError(f"{args.file}: settings are a mapping", USAGE)
    changes = nested(args.settings, base)
    if not changes:
        raise CliError("nothing to change: give KEY=VALUE or -f FILE", USAGE)
    config = client.configure(changes)
    output.done(args, f"cluster config updated: {', '.join(sorted(changes))}", config)
    return 0


@api
def capacity_run(client: Client, args: argparse.Namespace) -> int:
    capacity = client.capacity()
    if output.as_json(args):
        output.dump(capacity)
        return 0
    resources = capacity.get("resources") or {}
    rows = [{"resource": name, **values} for name, values in resources.items()]
    output.table(args, rows, RESOURCES, title=f"{capacity.get('hosts')} host(s) taking workloads")
    n1 = capacity.get("n_plus_1") or {}
    print("N+1: " + ("every HA workload fits elsewhere if any one host fails" if n1.get("ok") else
                     f"if {n1.get('worst_host')} fails its HA workloads lack {output.text(n1.get('short_of'))}"))
    return 0


@api
def rebalance_run(client: Client, args: argparse.Namespace) -> int:
    plan = client.rebalance_plan()
    if output.as_json(args):
        output.dump(plan)
        return 0
    over = ", ".join(plan.get("hosts_over") or []) or "none"
    output.table(args, plan.get("moves") or [], MOVES,
                 title=f"hosts over: {over}; measured score {plan.get('score_before', 0):.3f} -> "
                       f"{plan.get('score_after', 0):.3f} (mode {(plan.get('policy') or {}).get('mode')})")
    return 0


@api
def placements_run(client: Client, args: argparse.Namespace) -> int:
    placements = client.placements()
    output.table(args, sorted(placements, key=lambda p: str(p.get("workload"))), PLACEMENTS)
    return 0
