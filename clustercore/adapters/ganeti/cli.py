"""``clustercore-iallocator FILE``: the IAllocator program Ganeti runs."""

from __future__ import annotations

import json
import sys

from clustercore.adapters.ganeti.handlers import answer_text, reply
from clustercore.adapters.ganeti.validate import MAX_REQUEST_BYTES


def main(argv: list[str] | None = None) -> int:
    """``clustercore-iallocator [OPTION...] FILE``: print the answer as JSON (exit 0, as hail
    does). The options are hail's (``--no-capacity-checks``, ``--ignore-soft-errors``,
    ``--restrict-allocation-to=NODE,...``), as Ganeti passes its ``default_iallocator_params``."""
    argv = sys.argv[1:] if argv is None else argv
    flags = [a for a in argv if a.startswith("--")]
    args = [a for a in argv if not a.startswith("--")]
    if len(args) != 1:
        print("usage: clustercore-iallocator [--no-capacity-checks] [--ignore-soft-errors] "
              "[--restrict-allocation-to=NODE,...] REQUEST_FILE", file=sys.stderr)
        return 2
    try:
        with open(args[0], "rb") as f:
            text = f.read(MAX_REQUEST_BYTES + 1)
    except OSError as exc:
        print(json.dumps(reply(False, f"Invalid request: cannot read {args[0]}: {exc}", [])))
        return 0
    print(json.dumps(answer_text(text, flags)))
    return 0

