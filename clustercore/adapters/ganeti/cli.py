"""``clustercore-iallocator FILE``: the IAllocator program Ganeti runs."""

from __future__ import annotations

import json
import sys

from clustercore.adapters.ganeti.handlers import answer, reply


def main(argv: list[str] | None = None) -> int:
    """``clustercore-iallocator FILE``: print the answer as JSON (exit 0, as hail does)."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: clustercore-iallocator REQUEST_FILE", file=sys.stderr)
        return 2
    try:
        with open(args[0], encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError) as exc:
        print(json.dumps(reply(False, f"Invalid request: cannot read {args[0]}: {exc}", [])))
        return 0
    print(json.dumps(answer(data)))
    return 0

