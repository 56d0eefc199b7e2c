"""Run benchmarks and rewrite their sections of docs/benchmarks.md."""

from __future__ import annotations

import argparse
import importlib
import os
import platform
import re
import sys
from pathlib import Path

BENCHMARKS = ["controller", "scheduler", "rebalance", "ganeti", "extender", "drain", "fencing", "etcd", "guests", "tls",
              "api", "containers"]
DOC = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"
SECTION = re.compile(r"<!-- bench:(?P<name>[a-z_]+) -->\n(?P<body>.*?)<!-- /bench:(?P=name) -->\n", re.S)
HEADER = """# Benchmarks

Written by `./dev bench` (`python -m bench [NAME ...]`); numbers are from the machine that
ran it last (see each section). Targets come from the issues; they are met here, never in
timed tests.

"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("names", nargs="*", choices=[*BENCHMARKS, []], help="benchmarks to run (default: all)")
    args = parser.parse_args(argv)
    names = args.names or BENCHMARKS
    machine = f"{platform.python_implementation()} {platform.python_version()}, {platform.machine()}"
    ran = {}
    for name in names:
        module = importlib.import_module(f"bench.{name}")
        print(f"running {name}: {module.TITLE}", file=sys.stderr)
        body = module.run()
        ran[name] = f"## {module.TITLE}\n\n_{machine}, {os.cpu_count()} cores._\n\n{body.strip()}\n\n"
        print(body, file=sys.stderr)
    old = DOC.read_text() if DOC.exists() else ""  # read now: another bench may have written meanwhile
    sections = {m["name"]: m["body"] for m in SECTION.finditer(old)} | ran
    text = HEADER + "".join(f"<!-- bench:{n} -->\n{sections[n]}<!-- /bench:{n} -->\n" for n in BENCHMARKS
                            if n in sections)
    DOC.parent.mkdir(exist_ok=True)
    DOC.write_text(text)
    print(f"wrote {DOC}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
