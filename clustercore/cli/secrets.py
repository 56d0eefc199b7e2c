"""``clustercore secrets new-key|rotate``: the cluster key that seals fence passwords at
rest (:mod:`clustercore.secrets`).

``new-key`` prints a new key (for the key file every manager reads:
``CLUSTERCORE_SECRETS_KEY_FILE``). ``rotate --store URL`` re-seals every host's fence
passwords under the first key of that file, each host compare-and-swap with an event; a
host written meanwhile is read again. The rotation: put the new key first in the file of
every manager (the old one after it), run ``rotate``, then drop the old key.
"""

from __future__ import annotations

import argparse
import time

from clustercore.cli.base import Parser, Subparsers, etcd_options, open_store_of

ATTEMPTS = 5


def add(sub: Subparsers[Parser]) -> None:
    secrets: Parser = sub.add_parser("secrets", help="the cluster key sealing fence passwords at rest")
    actions = secrets.add_subparsers(dest="action", required=True)
    new: Parser = actions.add_parser("new-key", help="print a new cluster key")
    new.set_defaults(run=new_key)
    rotate: Parser = actions.add_parser("rotate", help="re-seal every fence password under the first key")
    rotate.add_argument("--store", required=True, help="etcd://host[:port],... or etcds://... (TLS)")
    rotate.add_argument("--prefix", default="/clustercore/", help="the cluster's key prefix in etcd")
    etcd_options(rotate)
    rotate.set_defaults(run=rotate_all)


def new_key(args: argparse.Namespace) -> int:
    from clustercore.secrets import new_key as make

    print(make())
    return 0


def rotate_all(args: argparse.Namespace) -> int:
    from clustercore.errors import Conflict, ValidationError
    from clustercore.events import EventLog
    from clustercore.reconcile.writer import Writer
    from clustercore.secrets import KEY_FILE_ENV, Secrets
    from clustercore.state import ClusterState

    secrets = Secrets.from_env()
    if not secrets.keys:
        raise ValidationError("secrets", KEY_FILE_ENV, "no cluster key: nothing to seal with", "")
    store = open_store_of(args)
    state = ClusterState(store)
    writer = Writer(store, state, EventLog(store), secrets)
    done = 0
    for name in sorted(state.hosts()):
        for attempt in range(ATTEMPTS):
            current = state.host(name)
            new = secrets.rotate_host(current.value)
            if new == current.value:
                break
            try:
                writer.update_host(current, new, time.time(), "fence passwords sealed under the current cluster key")
                done += 1
                break
            except Conflict:
                if attempt == ATTEMPTS - 1:
                    raise
    print(f"{done} host(s) re-sealed")
    return 0
