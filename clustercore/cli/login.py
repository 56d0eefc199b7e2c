"""Where the API is and who calls it: ``clustercore login``, ``clustercore config show|set|unset``,
and the connection every API command makes.

Precedence, first found wins: the ``--api``/``--token``/``--ca`` flags, then the
``CLUSTERCORE_API``/``CLUSTERCORE_TOKEN`` environment variables, then the config file
(``config.json`` in the user's config directory, e.g. ``~/.config/clustercore/``, or the
file ``CLUSTERCORE_CONFIG`` names). The file is written with mode 0600: it holds a token.

``login --api URL --token T --fingerprint F`` fetches the server's certificate, refuses it
unless its SHA-256 fingerprint is F (the one ``clustercore manager run`` printed), checks the
token against it (``whoami``) and only then stores the URL, the token and the certificate
(``server.pem`` beside the config, *pinned*: trusted alone, for that URL, whatever host name
it is reached by). Without ``--fingerprint`` a certificate the system's CAs vouch for is
accepted; any other is shown and refused (or asked about, on a terminal).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

from clustercore.cli import output
from clustercore.cli.base import (
    ERROR,
    PERMISSION,
    USAGE,
    CliError,
    Parser,
    Subparsers,
    api_options,
    code_for_status,
    need,
)

if TYPE_CHECKING:
    from clustercore.client import Client

KEYS = ("api", "token", "ca", "pinned")
ApiCommand = Callable[["Client", argparse.Namespace], int]


def config_path() -> Path:
    path = os.environ.get("CLUSTERCORE_CONFIG")
    if path:
        return Path(path)
    return Path(need("platformdirs").user_config_dir("clustercore")) / "config.json"


def read_config(path: Path) -> dict[str, Any]:
    """The config file's settings ({} when there is none)."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise CliError(f"cannot read the config file {path}: {exc}") from None
    if not isinstance(data, dict):
        raise CliError(f"the config file {path} does not hold a JSON object")
    return data


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically, readable by its owner only (0600; directory 0700)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")  # mkstemp creates it 0600
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_config(path: Path, data: dict[str, Any]) -> None:
    write_private(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


@attrs.frozen
class Target:
    """An API to call: its URL, token and the certificates to trust."""

    api: str
    token: str | None = attrs.field(repr=False)
    ca: str | None = None
    pinned: bool = False  # ca is the server's own certificate: trusted for any host name


def target(args: argparse.Namespace) -> Target:
    """The API the flags, the environment or the config file name (in that order)."""
    config = read_config(config_path())
    api = args.api or os.environ.get("CLUSTERCORE_API") or config.get("api")
    token = args.token or os.environ.get("CLUSTERCORE_TOKEN") or config.get("token")
    if not api:
        raise CliError("no API given: use --api URL, CLUSTERCORE_API, or clustercore login", USAGE)
    api = str(api).rstrip("/")
    if args.ca:
        return Target(api, token, args.ca)
    if api == str(config.get("api", "")).rstrip("/") and config.get("ca"):  # the server logged in to
        return Target(api, token, str(config["ca"]), bool(config.get("pinned")))
    return Target(api, token)


def connect(args: argparse.Namespace) -> Client:
    client_module = need("clustercore.client")
    t = target(args)
    client: Client = client_module.Client(t.api, t.token, t.ca, args.timeout, check_hostname=not t.pinned)
    return client


def api(command: ApiCommand) -> Callable[[argparse.Namespace], int]:
    """A command that calls the API: it gets a client; an ApiError becomes a one-line error
    with the exit code of its status."""
    @functools.wraps(command)
    def run(args: argparse.Namespace) -> int:
        from clustercore.client import ApiError

        try:
            with connect(args) as client:
                return command(client, args)
        except ApiError as exc:
            raise CliError(str(exc), code_for_status(exc.status)) from None
    return run


# ---------------------------------------------------------------------- commands


def add(sub: Subparsers[Parser]) -> None:
    login: Parser = sub.add_parser("login", help="check the server's certificate and token, and remember them")
    login.add_argument("--api", metavar="URL", required=True, help="https://HOST:PORT of a manager")
    login.add_argument("--token", required=True, help="an API token (clustercore token create)")
    login.add_argument("--fingerprint", default=None,
                       help="the SHA-256 fingerprint the manager printed (pins its self-signed certificate)")
    login.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for the server")
    login.set_defaults(run=run_login)
    config: Parser = sub.add_parser("config", help="the CLI's own settings (API URL, token, certificate)")
    actions = config.add_subparsers(dest="action", required=True)
    show: Parser = actions.add_parser("show", help="the settings and where they come from")
    api_options(show)
    show.set_defaults(run=config_show)
    set_: Parser = actions.add_parser("set", help="set api, token, ca or pinned")
    set_.add_argument("key", choices=KEYS)
    set_.add_argument("value")
    set_.set_defaults(run=config_set)
    unset: Parser = actions.add_parser("unset", help="forget a setting")
    unset.add_argument("key", choices=KEYS)
    unset.set_defaults(run=config_set, value=None)


def run_login(args: argparse.Namespace) -> int:
    from clustercore.client import ApiError, Client, fingerprint, same_fingerprint, server_certificate

    url = args.api.rstrip("/")
    path = config_path()
    pem_path = path.parent / "server.pem"
    ca: Path | None = None
    try:
        if url.startswith("https://"):
            pem = server_certificate(url, args.timeout)
            seen = fingerprint(pem)
            if args.fingerprint is not None:
                if not same_fingerprint(seen, args.fingerprint):
                    raise CliError(f"{url} presents a certificate with fingerprint {seen}, not {args.fingerprint}: "
                                   "refused, nothing stored", PERMISSION)
                pin = True
            else:
                pin = not trusted_by_system(url, args.timeout)
                if pin and not confirm(url, seen):
                    raise CliError(f"{url} presents a certificate no CA vouches for, fingerprint {seen}; if the "
                                   "manager printed the same, run again with --fingerprint " + seen, PERMISSION)
            if pin:
                ca = pem_path.with_suffix(".pem.new")
                write_private(ca, pem)
        with Client(url, args.token, ca, args.timeout, check_hostname=ca is None) as client:
            me = client.whoami()
    except ApiError as exc:
        if ca is not None:
            ca.unlink(missing_ok=True)
        raise CliError(str(exc), code_for_status(exc.status) if exc.status else ERROR) from None
    config = read_config(path)
    config.update(api=url, token=args.token)
    config.pop("ca", None)
    config.pop("pinned", None)
    if ca is not None:
        os.replace(ca, pem_path)
        config.update(ca=str(pem_path), pinned=True)
    write_config(path, config)
    print(f"logged in to {url} as {me.get('name')} ({me.get('role')}); settings in {path}")
    return 0


def trusted_by_system(url: str, timeout: float) -> bool:
    """Whether the system's CAs vouch for the certificate of ``url`` (and its name)."""
    from clustercore.client import ApiError, Client

    try:
        with Client(url, None, timeout=timeout) as client:
            client.call("GET", "/whoami")
    except ApiError as exc:
        return exc.status != 0  # an answer (even 401) came through a verified connection
    return True


def confirm(url: str, seen: str) -> bool:
    """Ask on a terminal whether to trust a certificate (False when nobody can answer)."""
    if not (sys.stdin.isatty() and sys.stderr.isatty()):
        return False
    sys.stderr.write(f"{url} presents a self-signed certificate, SHA-256 fingerprint\n  {seen}\n"
                     "Is it the one the manager printed? [y/N] ")
    sys.stderr.flush()
    return sys.stdin.readline().strip().lower() in ("y", "yes")


def config_show(args: argparse.Namespace) -> int:
    path = config_path()
    stored = read_config(path)
    shown = {k: stored.get(k) for k in KEYS if k in stored}
    if shown.get("token"):
        shown["token"] = mask(str(shown["token"]))
    try:
        t: Target | None = target(args)
    except CliError:
        t = None
    effective = {"api": t.api if t else None, "token": mask(t.token) if t and t.token else None,
                 "ca": t.ca if t else None, "pinned": t.pinned if t else False}
    output.show(args, {"file": str(path), "stored": shown, "effective": effective})
    return 0


def config_set(args: argparse.Namespace) -> int:
    path = config_path()
    config = read_config(path)
    if args.value is None:
        config.pop(args.key, None)
    elif args.key == "pinned":
        if args.value not in ("true", "false"):
            raise CliError(f"pinned is true or false, not {args.value!r}", USAGE)
        config["pinned"] = args.value == "true"
    elif args.key == "ca":
        config["ca"] = str(Path(args.value).resolve())
    else:
        config[args.key] = args.value.rstrip("/") if args.key == "api" else args.value
    write_config(path, config)
    return 0


def mask(token: str) -> str:
    """A token as shown: its first characters only (``cc_<id>_...`` names it, hides its secret)."""
    return token[:12] + "..." if len(token) > 12 else "***"
