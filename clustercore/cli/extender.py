"""``clustercore extender --listen HOST:PORT``: the Kubernetes scheduler extender.

Serves the verbs filter, prioritize, bind and preempt (see docs/kubernetes.md) until
SIGTERM or Ctrl-C. ``--nodes FILE`` loads the node cache (a NodeList, ``kubectl get nodes
-o json``) for ``nodeCacheCapable: true``; ``PUT /nodes`` replaces it later. HTTPS with
``--cert``/``--key`` (kube's ``enableHTTPS``). ``--kube-api URL`` with ``--token-file``
and ``--ca-file`` lets bind create Bindings; without it bind answers an error.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from clustercore.cli.base import CliError, Parser, Subparsers, exit_code, need, read_document, stop_on_signals

log = logging.getLogger(__name__)


def add(sub: Subparsers[Parser]) -> dict[str, Parser]:
    parser: Parser = sub.add_parser("extender", help="serve a Kubernetes scheduler extender")
    parser.add_argument("--listen", metavar="HOST:PORT", default="127.0.0.1:8888", help="where to serve it")
    parser.add_argument("--cert", metavar="FILE", type=Path, default=None, help="TLS certificate (PEM): HTTPS")
    parser.add_argument("--key", metavar="FILE", type=Path, default=None, help="its private key (PEM)")
    parser.add_argument("--nodes", metavar="FILE", default=None,
                        help="a NodeList (JSON or YAML) for the node cache (nodeCacheCapable: true)")
    parser.add_argument("--kube-api", metavar="URL", default=None, help="the Kubernetes API server, for bind")
    parser.add_argument("--token-file", metavar="FILE", type=Path, default=None,
                        help="a bearer token for the API server (a ServiceAccount's)")
    parser.add_argument("--ca-file", metavar="FILE", type=Path, default=None, help="the API server's CA (PEM)")
    parser.set_defaults(run=run)
    return {"extender": parser}


def run(args: argparse.Namespace) -> int:
    need("starlette")
    need("uvicorn")
    from clustercore.adapters.kube import Extender, ExtenderServer, KubeApiBinder, node_list_items

    if (args.cert is None) != (args.key is None):
        raise CliError("--cert and --key go together", 2)
    binder = KubeApiBinder.from_files(args.kube_api, args.token_file, args.ca_file) if args.kube_api else None
    extender = Extender(binder=binder)
    if args.nodes:
        count = extender.set_nodes(node_list_items(read_document(args.nodes)))
        print(f"node cache: {count} nodes from {args.nodes}", flush=True)
    server = ExtenderServer(extender, args.listen, args.cert, args.key).start()
    print(f"extender at {server.url}", flush=True)
    try:
        with stop_on_signals() as stop:
            stop.wait()
    finally:
        server.stop()
        if binder is not None:
            binder.close()
    return exit_code(stop)
