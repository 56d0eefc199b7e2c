"""The ``clustercore`` command: its parser, made of each concept's subcommands, and ``main``.

Every error is one line on stderr (``clustercore: error: ...``) and an exit code, never a
traceback: 0 ok, 1 an error while running (the API refused, a bad store URL, an
unreachable server, a missing extra...), 2 bad arguments (usage), 3 not found, 4
permission (no token, a token whose role is too low, a certificate refused), 5 conflict
(a name taken, a state that does not allow it, an operation that cannot be cancelled), 130
Ctrl-C. ``-v`` logs at DEBUG, with the traceback of an unexpected error.
"""

from __future__ import annotations

import logging
import sys

from clustercore.cli import agent, cluster, events, extender, hosts, login, manager, ops, secrets, tokens, vms
from clustercore.cli.base import ERROR, INTERRUPTED, CliError, Parser, api_options
from clustercore.errors import ClusterError

log = logging.getLogger(__name__)


def parser() -> Parser:
    top = Parser(prog="clustercore", description="generic cluster management")
    top.add_argument("-v", "--verbose", action="store_true", help="log at DEBUG")
    api_options(top, top=True)
    sub = top.add_subparsers(dest="command", required=True, parser_class=Parser)
    top.commands = {}
    top.commands.update(manager.add(sub))
    top.commands.update(agent.add(sub))
    for concept in (hosts, vms, events, ops, tokens, cluster, login, secrets, extender):
        concept.add(sub)
    return top


def main(argv: list[str] | None = None) -> int:
    top = parser()
    args = top.parse_args(argv)
    if args.command == "manager":
        manager.check(top.commands["manager"], args)
    if args.command == "agent":
        agent.check(top.commands["agent"], args)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        code: int = args.run(args)
        return code
    except KeyboardInterrupt:
        return INTERRUPTED
    except CliError as exc:
        return fail(exc.message, exc.code)
    except (ClusterError, ImportError, ValueError, OSError) as exc:
        return fail(str(exc))
    except Exception as exc:  # a bug: still one line; -v shows where
        log.debug("unexpected error", exc_info=True)
        return fail(f"unexpected {type(exc).__name__}: {exc} (-v shows the traceback)")


def fail(message: str, code: int = ERROR) -> int:
    line = "; ".join(part.strip() for part in message.splitlines() if part.strip())
    sys.stderr.write(f"clustercore: error: {line}\n")
    return code

