"""What commands print: rich tables for people, JSON for scripts (``-o json``), a progress
bar while an operation runs (on stderr, so stdout keeps only the result).

rich is imported when something is printed as a table, never for ``-o json``.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from clustercore.cli.base import CliError, need

Getter = Callable[[Mapping[str, Any]], object]
TIMES = frozenset({"time", "since", "created", "updated", "revoked", "expires"})  # seconds since the epoch
Column = tuple[str, "str | Getter"]  # a header, and a dotted key or a function of the row


def as_json(args: argparse.Namespace) -> bool:
    return getattr(args, "output", "table") == "json"


def dump(data: Any) -> None:
    """``data`` as JSON on stdout (one document)."""
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
    sys.stdout.flush()


def field(row: Mapping[str, Any], path: str) -> object:
    """The value at a dotted ``path`` of ``row`` (None when any part is missing)."""
    value: object = row
    for part in path.split("."):
        if not isinstance(value, Mapping):
            return None
        value = value.get(part)
    return value


def when(value: object) -> str:
    """A time (seconds since the epoch) as local date and time; anything else as it is."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return datetime.datetime.fromtimestamp(value).strftime("%Y-%m-%d %H:%M:%S")
    return text(value)


def text(value: object) -> str:
    """A value as a table cell: lists joined, mappings as k=v, None empty."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, Mapping):
        return ", ".join(f"{k}={text(v)}" for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return ", ".join(text(v) for v in value)
    return str(value)


def console(stderr: bool = False) -> Any:
    return need("rich.console").Console(stderr=stderr, highlight=False, soft_wrap=False)


def table(args: argparse.Namespace, rows: Sequence[Mapping[str, Any]], columns: Sequence[Column],
          title: str | None = None) -> None:
    """``rows`` as a table of ``columns`` (or, with ``-o json``, the rows as they came)."""
    if as_json(args):
        dump(list(rows))
        return
    rich_table = need("rich.table")
    out = rich_table.Table(title=title, box=need("rich.box").SIMPLE_HEAD, show_edge=False)
    for header, _ in columns:
        out.add_column(header, overflow="fold")
    for row in rows:
        out.add_row(*(escape(text(get(row) if callable(get) else field(row, get))) for _, get in columns))
    console().print(out)


def show(args: argparse.Namespace, data: Mapping[str, Any], order: Sequence[str] = ()) -> None:
    """One object: a two-column table of its fields (``order`` first), nested values as
    compact JSON; with ``-o json`` the object as it came."""
    if as_json(args):
        dump(data)
        return
    rich_table = need("rich.table")
    out = rich_table.Table(show_header=False, box=None, pad_edge=False)
    out.add_column(style="bold")
    out.add_column(overflow="fold")
    for key in [*order, *(k for k in data if k not in order)]:
        if key in data:
            value = data[key]
            shown = json.dumps(value, default=str) if isinstance(value, (dict, list)) and value else \
                when(value) if key in TIMES else text(value)
            out.add_row(key, escape(shown))
    console().print(out)


def done(args: argparse.Namespace, message: str, data: Any = None) -> None:
    """What an action did: ``message`` for people, ``data`` (the API's answer) for scripts."""
    if as_json(args):
        dump(data if data is not None else {"message": message})
    else:
        print(message, flush=True)


def escape(value: str) -> str:
    """A cell shown literally (rich reads ``[...]`` as markup)."""
    return str(need("rich.markup").escape(value))


# ---------------------------------------------------------------------- operations


def describe(op: Mapping[str, Any]) -> str:
    """``maintenance node1 (3f2a…)``: an operation in a few words."""
    return f"{op.get('kind')} {op.get('target')} ({str(op.get('id', ''))[:8]})"


@contextlib.contextmanager
def progress_bar(args: argparse.Namespace) -> Iterator[Callable[[Mapping[str, Any]], None]]:
    """A function to call with each state of an operation: a rich progress bar on stderr
    (nothing with ``-o json``)."""
    if as_json(args):
        yield lambda op: None
        return
    progress = need("rich.progress")
    columns = (progress.TextColumn("{task.description}"), progress.BarColumn(),
               progress.TaskProgressColumn(), progress.TimeElapsedColumn())
    with progress.Progress(*columns, console=console(stderr=True), transient=False) as bar:
        task = bar.add_task("waiting", total=100.0)

        def update(op: Mapping[str, Any]) -> None:
            step = op.get("step") or op.get("state") or ""
            bar.update(task, completed=float(op.get("progress") or 0.0),
                       description=escape(f"{describe(op)}: {step}"))
            if op.get("state") == "Succeeded":
                bar.update(task, completed=100.0)

        yield update


def finished(args: argparse.Namespace, op: Mapping[str, Any], waited: float | None = None) -> int:
    """Report an operation waited for: 0 when it Succeeded; a one-line error (exit 1) when
    it Failed, was Cancelled, or is still going after ``waited`` seconds."""
    state = op.get("state")
    if state == "Succeeded":
        result = op.get("result")
        done(args, f"{describe(op)} Succeeded" + (f": {result}" if result else ""), op)
        return 0
    if as_json(args):
        dump(op)
    if state == "Failed":
        raise CliError(f"{describe(op)} failed: {op.get('error') or 'no reason given'}")
    if state == "Cancelled":
        raise CliError(f"{describe(op)} was cancelled")
    raise CliError(f"{describe(op)} still {state} at {text(op.get('progress'))}% after {text(waited)} s")
