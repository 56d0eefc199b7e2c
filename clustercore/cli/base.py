"""What every command shares: the one-line argument parser, exit codes, errors that carry
their exit code, argument types, signal handling and reading a document file.

Nothing here imports the ``api`` extra (httpx, rich, yaml, platformdirs): commands that need
it import it when they run (:func:`need`), so ``clustercore --help`` and the commands that
work without it stay fast and available.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import logging
import math
import signal
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from types import FrameType, ModuleType
from typing import Any, NoReturn

log = logging.getLogger(__name__)

OK, ERROR, USAGE, NOT_FOUND, PERMISSION, CONFLICT = 0, 1, 2, 3, 4, 5
INTERRUPTED = 128 + signal.SIGINT  # the shell's code for a command ended by Ctrl-C
API_EXTRA = "pip install 'clustercore[api]'"


class CliError(Exception):
    """A failure to report as one line on stderr, with the exit ``code`` it means."""

    def __init__(self, message: str, code: int = ERROR) -> None:
        self.message = message
        self.code = code
        super().__init__(message)


def code_for_status(status: int) -> int:
    """The exit code for an HTTP status: 404 not found, 401/403 permission, 409 conflict."""
    return {404: NOT_FOUND, 401: PERMISSION, 403: PERMISSION, 409: CONFLICT}.get(status, ERROR)


def need(module: str) -> ModuleType:
    """Import ``module`` of the ``api`` extra, or raise CliError naming the extra."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise CliError(f"this command needs the api extra ({exc}): {API_EXTRA}") from None


class Parser(argparse.ArgumentParser):
    """argparse, with an error as one line (``-h`` shows the usage); ``commands`` holds the
    subcommands' parsers by name."""

    commands: dict[str, Parser]

    def error(self, message: str) -> NoReturn:
        self.exit(USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


Subparsers = argparse._SubParsersAction  # the type of add_subparsers()' result


def seconds(text: str) -> float:
    """An argparse type: a finite number of seconds above 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a finite number of seconds > 0, got {text!r}")
    return value


def key_value(text: str) -> tuple[str, str]:
    """An argparse type: ``KEY=VALUE`` (the value may be empty, the key not)."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"must be KEY=VALUE, got {text!r}")
    return key, value


def scalar(text: str) -> Any:
    """A command-line value as data: JSON when it parses (``3``, ``true``, ``[1]``), else the string."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def api_options(parser: argparse.ArgumentParser, top: bool = False) -> None:
    """The options of every command that calls the API. Defaults live on the top parser
    only (a subcommand's default would overwrite a value given before the subcommand)."""
    def default(value: object) -> object:
        return value if top else argparse.SUPPRESS

    group = parser.add_argument_group("API") if top else parser
    group.add_argument("--api", metavar="URL", default=default(None),
                       help="the manager's API (else CLUSTERCORE_API, else the config file)")
    group.add_argument("--token", default=default(None), help="the API token (else CLUSTERCORE_TOKEN, else the config)")
    group.add_argument("--ca", metavar="FILE", default=default(None),
                       help="trust the certificates of FILE (a CA: the host name is checked)")
    group.add_argument("--timeout", type=seconds, default=default(30.0), help="seconds to wait for an answer")
    group.add_argument("-o", "--output", choices=["table", "json"], default=default("table"),
                       help="table for people, json for scripts")


ETCD_OPTIONS = ("ca", "cert", "key", "user", "password_file")


def etcd_options(parser: argparse.ArgumentParser) -> None:
    """How a command that opens the store reaches a secured etcd (etcds:// URLs)."""
    group = parser.add_argument_group("a secured etcd (else CLUSTERCORE_ETCD_CA, _CERT, _KEY, _USER, _PASSWORD_FILE)")
    group.add_argument("--etcd-ca", metavar="FILE", default=None, help="the CA etcd's certificate is signed by")
    group.add_argument("--etcd-cert", metavar="FILE", default=None, help="this client's certificate")
    group.add_argument("--etcd-key", metavar="FILE", default=None, help="this client's key")
    group.add_argument("--etcd-user", default=None, help="the etcd user")
    group.add_argument("--etcd-password-file", metavar="FILE", default=None,
                       help="file holding that user's password (never on the command line)")


def open_store_of(args: argparse.Namespace) -> Any:
    """The store of ``--store``/``--prefix`` and the etcd options (:func:`etcd_options`)."""
    from clustercore.store.url import open_store

    return open_store(args.store, args.prefix, **{name: getattr(args, f"etcd_{name}", None) for name in ETCD_OPTIONS})


def read_document(path: str) -> Any:
    """The data in a JSON or YAML file (``-``: standard input). JSON when the name ends in
    ``.json`` or the text starts with ``{`` or ``[``; YAML otherwise (it needs the extra)."""
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise CliError(f"cannot read {path}: {exc}") from None
    if path.endswith(".json") or text.lstrip().startswith(("{", "[")):
        try:
            return json.loads(text)
        except ValueError as exc:
            raise CliError(f"{path}: not valid JSON: {exc}") from None
    yaml = need("yaml")
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise CliError(f"{path}: not valid YAML: {' '.join(str(exc).split())}") from None


class SignalStop(threading.Event):
    """A stop event that SIGTERM or SIGINT sets; ``signum`` says which one did."""

    signum: int | None = None


@contextlib.contextmanager
def stop_on_signals() -> Iterator[SignalStop]:
    """A :class:`SignalStop` set by SIGTERM and SIGINT while inside (only the main thread
    can take signals); the previous handlers come back afterwards. A second signal while
    stopping raises KeyboardInterrupt."""
    stop = SignalStop()

    def handler(signum: int, frame: FrameType | None) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        stop.signum = signum  # no logging here: a handler may interrupt a write to the same stream
        stop.set()

    previous = {}
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGTERM, signal.SIGINT):
            previous[signum] = signal.signal(signum, handler)
    try:
        yield stop
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)
        if stop.signum is not None:
            log.info("stopped by %s", signal.Signals(stop.signum).name)


def exit_code(stop: SignalStop) -> int:
    return INTERRUPTED if stop.signum == signal.SIGINT else OK
