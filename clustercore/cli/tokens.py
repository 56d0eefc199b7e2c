"""``clustercore token create|list|revoke``: API tokens (viewer < operator < admin) and
one-time join tokens for hosts.

``token create --store URL NAME --role admin`` writes a token straight into the store, without
an API: how the first admin token comes to be. Every other form calls the API as an admin.
A secret is shown once, at creation; the store keeps only its digest.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from clustercore.cli import output
from clustercore.cli.base import USAGE, CliError, Parser, Subparsers, api_options, etcd_options, open_store_of
from clustercore.cli.login import api

if TYPE_CHECKING:
    from clustercore.client import Client

ROLES = ("viewer", "operator", "admin")
COLUMNS: list[output.Column] = [("ID", "id"), ("NAME", "name"), ("ROLE", "role"),
                                ("CREATED", lambda t: output.when(t.get("created"))),
                                ("REVOKED", lambda t: output.when(t.get("revoked"))), ("BY", "by")]


def add(sub: Subparsers[Parser]) -> None:
    token: Parser = sub.add_parser("token", help="API tokens and join tokens")
    actions = token.add_subparsers(dest="action", required=True)
    create: Parser = actions.add_parser("create", help="a new API token (NAME --role R) or join token (--join HOST)")
    api_options(create)
    create.add_argument("name", nargs="?", help="who the token is for (named in the audit events)")
    create.add_argument("--role", choices=ROLES, default=None, help="what it may do")
    create.add_argument("--join", metavar="HOST", default=None,
                        help="a one-time join token for this host (clustercore agent --join)")
    create.add_argument("--store", default=None,
                        help="write it into this store directly, no API (bootstrapping the first admin token)")
    create.add_argument("--prefix", default="/clustercore/", help="the cluster's key prefix in etcd (with --store)")
    etcd_options(create)
    create.set_defaults(run=token_create)
    listing: Parser = actions.add_parser("list", help="every API token (never their secrets)")
    api_options(listing)
    listing.set_defaults(run=token_list)
    revoke: Parser = actions.add_parser("revoke", help="revoke a token: it stops working at once")
    api_options(revoke)
    revoke.add_argument("id", help="the token's id")
    revoke.set_defaults(run=token_revoke)


def token_create(args: argparse.Namespace) -> int:
    if args.join is not None:
        if args.name or args.role or args.store:
            raise CliError("--join HOST takes no NAME, --role or --store", USAGE)
        return join_token(args)
    if not args.name or not args.role:
        raise CliError("give NAME and --role viewer|operator|admin (or --join HOST)", USAGE)
    if args.store is not None:
        return bootstrap(args)
    return api_token(args)


def bootstrap(args: argparse.Namespace) -> int:
    """Write a token into the store itself (no API, no token needed: access to the store is the right)."""
    if args.store.startswith("memory://"):
        raise CliError("a memory:// store lives inside one process: give the etcd store the managers use", USAGE)
    from clustercore.auth import create_token

    secret = create_token(open_store_of(args), args.name, args.role)
    output.done(args, secret, {"name": args.name, "role": args.role, "secret": secret})
    return 0


@api
def api_token(client: Client, args: argparse.Namespace) -> int:
    answer = client.create_token(args.name, args.role)
    output.done(args, str(answer.get("secret")), answer)
    return 0


@api
def join_token(client: Client, args: argparse.Namespace) -> int:
    answer = client.create_join_token(args.join)
    output.done(args, str(answer.get("secret") or answer.get("token")), answer)
    return 0


@api
def token_list(client: Client, args: argparse.Namespace) -> int:
    output.table(args, client.tokens(), COLUMNS)
    return 0


@api
def token_revoke(client: Client, args: argparse.Namespace) -> int:
    client.revoke_token(args.id)
    output.done(args, f"token {args.id} revoked", {"revoked": args.id})
    return 0
