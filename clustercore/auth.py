"""Who may call the API: bearer tokens with roles, one-time join tokens, host credentials.

**API tokens** look like ``cc_<id>_<secret>``. The store keeps only the SHA-256 digest of
the secret, under ``tokens/<id>`` (name, role, digest, created, revoked, by); the secret is
shown once, when the token is made. Roles are ordered, each allowing what the one below
allows::

    viewer    reads everything (hosts, workloads, events, operations, config, metrics)
    operator  + acts on workloads and maintenance
    admin     + hosts, the cluster config and tokens

A token is checked in constant time (an unknown id costs the same digest comparison as a
wrong secret); a revoked one fails at once, on every manager (it is read from the store
on every call). :func:`create_token` needs only the store, so the first admin token is
made without an API (``clustercore token create --store URL NAME --role admin``).

**Join tokens** (``ccj_<id>_<secret>``, under ``join/<id>`` with the host name they are for
and when they expire) let one host register itself: :func:`join_host` registers it
(approved: an admin made the token) and deletes the token in the same transaction,
compare-and-swap on the token's revision, so a token is spent at most once even when two
hosts present it at the same moment. The host gets its heartbeat credential
(:mod:`clustercore.credentials`), with which :func:`check_host_credential` admits its
heartbeats.
"""

from __future__ import annotations

import contextlib
import enum
import hashlib
import hmac
import json
import re
import secrets
import time
from collections.abc import Callable, Mapping
from typing import Any

import attrs

from clustercore import credentials, fencing, join
from clustercore.errors import ClusterError, Conflict, HostExists, ValidationError
from clustercore.events import Event, EventLog
from clustercore.model import Host
from clustercore.state import HOSTS, encode
from clustercore.store.base import Check, Delete, Put, Store
from clustercore.values import CONTROL, NAME_RE, Reader

TOKENS = "tokens/"
JOIN = "join/"
ID_RE = re.compile(r"\A[0-9a-f]{16}\Z")
TOKEN_NAME_RE = re.compile(r"\A[A-Za-z0-9][A-Za-z0-9@._ -]{0,127}\Z")
#: A join token lives this long unless told otherwise (seconds).
JOIN_TTL = 3600.0
_DUMMY = hashlib.sha256(b"no such token").hexdigest()


class Role(enum.Enum):
    VIEWER = "viewer"
    OPERATOR = "operator"
    ADMIN = "admin"

    @property
    def rank(self) -> int:
        return _RANKS[self]

    def allows(self, needed: Role) -> bool:
        """Whether a token of this role may do what ``needed`` may."""
        return self.rank >= needed.rank

    def __str__(self) -> str:
        return self.value


_RANKS = {Role.VIEWER: 1, Role.OPERATOR: 2, Role.ADMIN: 3}


class Unauthorized(ClusterError):
    """No credential, or one that is unknown, wrong, revoked, spent or expired (HTTP 401).
    ``why`` never holds the credential itself."""

    def __init__(self, why: str) -> None:
        self.why = why
        super().__init__(why)


class Forbidden(ClusterError):
    """A valid token whose role is below what the call needs (HTTP 403)."""

    def __init__(self, name: str, role: Role, needed: Role) -> None:
        self.name, self.role, self.needed = name, role, needed
        super().__init__(f"token {name!r} has role {role}: this needs {needed}")


class UnknownToken(ClusterError, KeyError):
    def __init__(self, token_id: str) -> None:
        self.token_id = token_id
        super().__init__(f"no token with id {token_id!r}")

    def __str__(self) -> str:
        return str(self.args[0])


@attrs.frozen
class ApiToken:
    """An API token as stored: never the secret, only its digest (never shown either)."""

    id: str
    name: str
    role: Role
    digest: str = attrs.field(repr=False)
    created: float = 0.0
    revoked: float | None = None
    by: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "role": self.role.value, "digest": self.digest,
                "created": self.created, "revoked": self.revoked, "by": self.by}

    def view(self) -> dict[str, Any]:
        """What the API shows of it (no digest)."""
        return {k: v for k, v in self.to_dict().items() if k != "digest"}

    @classmethod
    def from_dict(cls, data: object) -> ApiToken:
        r = Reader("token", data)
        token = cls(r.string("id", pattern=ID_RE), r.string("name"), r.enum("role", Role), r.string("digest"),
                    r.number("created", 0.0), r.optional_number("revoked"), r.string("by", ""))
        r.done()
        return token


@attrs.frozen
class JoinToken:
    id: str
    host: str
    digest: str = attrs.field(repr=False)
    created: float = 0.0
    expires: float = 0.0
    by: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "host": self.host, "digest": self.digest, "created": self.created,
                "expires": self.expires, "by": self.by}

    def view(self) -> dict[str, Any]:
        return {k: v for k, v in self.to_dict().items() if k != "digest"}

    @classmethod
    def from_dict(cls, data: object) -> JoinToken:
        r = Reader("join token", data)
        token = cls(r.string("id", pattern=ID_RE), r.string("host", pattern=NAME_RE), r.string("digest"),
                    r.number("created", 0.0), r.number("expires", 0.0), r.string("by", ""))
        r.done()
        return token


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _parse(presented: str, scheme: str) -> tuple[str, str] | None:
    """(id, secret) of ``<scheme>_<id>_<secret>``, None when it is not one."""
    parts = presented.split("_", 2)
    if len(parts) != 3 or parts[0] != scheme or not ID_RE.match(parts[1]) or not parts[2]:
        return None
    return parts[1], parts[2]


def _json(value: bytes) -> object:
    return json.loads(value)


def check_name(name: object) -> str:
    """A token's name (named in audit events): printable, 1-128 characters."""
    if not isinstance(name, str) or not TOKEN_NAME_RE.match(name) or CONTROL.search(name):
        raise ValidationError("token", "name", f"must match {TOKEN_NAME_RE.pattern}", name)
    return name


def check_role(role: object) -> Role:
    try:
        return Role(role)
    except ValueError:
        raise ValidationError("token", "role", "must be one of viewer, operator, admin", role) from None


# --------------------------------------------------------------------------- API tokens


def issue_token(store: Store, name: str, role: Role | str, now: float | None = None,
                by: str = "") -> tuple[ApiToken, str]:
    """A new API token: its record and the full token (``cc_<id>_<secret>``, shown once)."""
    token = ApiToken(secrets.token_hex(8), check_name(name), check_role(role if isinstance(role, str) else role.value),
                     "", time.time() if now is None else now, None, by)
    secret = secrets.token_urlsafe(32)
    token = attrs.evolve(token, digest=_digest(secret))
    store.put(TOKENS + token.id, encode(token), expect=0)
    return token, f"cc_{token.id}_{secret}"


def create_token(store: Store, name: str, role: Role | str, now: float | None = None) -> str:
    """Make an API token straight in the store (bootstrapping, no API needed): the token."""
    return issue_token(store, name, role, now, by="store")[1]


def verify_token(store: Store, presented: str) -> ApiToken:
    """The token ``presented`` is (Unauthorized when it is not a valid, unrevoked one)."""
    parsed = _parse(presented, "cc")
    kv = store.get(TOKENS + parsed[0]) if parsed is not None else None
    token = None
    if kv is not None:
        try:
            token = ApiToken.from_dict(_json(kv.value))
        except (ValueError, ValidationError):
            token = None
    matches = hmac.compare_digest(token.digest if token is not None else _DUMMY,
                                  _digest(parsed[1] if parsed is not None else ""))
    if token is None or not matches:
        raise Unauthorized("invalid API token")
    if token.revoked is not None:
        raise Unauthorized(f"token {token.id} ({token.name}) was revoked")
    return token


def list_tokens(store: Store) -> list[ApiToken]:
    out = []
    for kv in store.list(TOKENS):
        try:
            out.append(ApiToken.from_dict(_json(kv.value)))
        except (ValueError, ValidationError):
            continue
    return sorted(out, key=lambda t: (t.created, t.id))


def revoke_token(store: Store, token_id: str, now: float | None = None) -> ApiToken:
    """Revoke a token (compare-and-swap; revoking a revoked one changes nothing)."""
    for _ in range(3):
        kv = store.get(TOKENS + token_id) if ID_RE.match(token_id) else None
        if kv is None:
            raise UnknownToken(token_id)
        token = ApiToken.from_dict(_json(kv.value))
        if token.revoked is not None:
            return token
        token = attrs.evolve(token, revoked=time.time() if now is None else now)
        try:
            store.put(TOKENS + token_id, encode(token), expect=kv.mod_revision)
            return token
        except Conflict:
            continue
    raise Conflict(TOKENS + token_id, 0, 0)


# --------------------------------------------------------------------------- join tokens


def issue_join_token(store: Store, host: str, now: float, ttl: float = JOIN_TTL,
                     by: str = "") -> tuple[JoinToken, str]:
    """A one-time token with which the host named ``host`` registers itself; expired join
    tokens are cleared on the way."""
    if not isinstance(host, str) or not NAME_RE.match(host):
        raise ValidationError("join token", "host", f"must match {NAME_RE.pattern}", host)
    if store.get(HOSTS + host) is not None:
        raise HostExists(host)
    for kv in store.list(JOIN):
        try:
            expired = JoinToken.from_dict(_json(kv.value)).expires <= now
        except (ValueError, ValidationError):
            expired = True
        if expired:
            with contextlib.suppress(ClusterError):  # spent or cleared meanwhile
                store.delete(kv.key, expect=kv.mod_revision)
    secret = secrets.token_urlsafe(32)
    token = JoinToken(secrets.token_hex(8), host, _digest(secret), now, now + ttl, by)
    store.put(JOIN + token.id, encode(token), expect=0)
    return token, f"ccj_{token.id}_{secret}"


def join_host(store: Store, events: EventLog, presented: str, definition: Mapping[str, Any],
              now: float, seal: Callable[[Host], Host] = lambda host: host) -> tuple[Host, str]:
    """Register the host ``definition`` describes with the join token ``presented``: the
    host (Installing: approved) and its heartbeat credential. The token is spent in the
    same transaction (compare-and-swap on it): Unauthorized when it is unknown, wrong,
    expired or spent; ValidationError when the definition is malformed or names another
    host than the token's; HostExists when the name is taken (the token is not spent).
    ``seal`` seals its fence passwords (the cluster's :class:`~clustercore.secrets.Secrets`)."""
    parsed = _parse(presented, "ccj")
    kv = store.get(JOIN + parsed[0]) if parsed is not None else None
    token = None
    if kv is not None:
        try:
            token = JoinToken.from_dict(_json(kv.value))
        except (ValueError, ValidationError):
            token = None
    matches = hmac.compare_digest(token.digest if token is not None else _DUMMY,
                                  _digest(parsed[1] if parsed is not None else ""))
    if token is None or kv is None or not matches:
        raise Unauthorized("invalid or spent join token")
    if token.expires <= now:
        raise Unauthorized(f"join token {token.id} expired")
    host = Host.from_dict(dict(definition))
    if host.name != token.host:
        raise ValidationError("host", "name", f"this join token is for host {token.host!r}", host.name)
    for i, device in enumerate(host.fence_devices):
        fencing.check_device(device, f"fence_devices[{i}]")
    host = seal(join.registered(host, approval_required=False, now=now))  # its fence passwords sealed
    credential = credentials.issue()
    event = Event(now, f"host/{host.name}", "registered", f"joined with join token {token.id} (made by "
                  f"{token.by or 'unknown'})", "", str(host.state))
    try:
        store.txn([Check(HOSTS + host.name, 0), Check(JOIN + token.id, kv.mod_revision)],
                  [Put(HOSTS + host.name, encode(host)), events.put_op(event),
                   Put(credentials.KEY + host.name, credentials.digest(credential).encode()), Delete(JOIN + token.id)])
    except Conflict as exc:
        if exc.key == HOSTS + host.name:
            raise HostExists(host.name) from None
        raise Unauthorized("join token already spent") from None
    return host, credential


# --------------------------------------------------------------------------- hosts


def check_host_credential(store: Store, host: str, presented: str) -> None:
    """Admit a heartbeat of ``host`` only with its own credential (Unauthorized otherwise;
    a host without a stored credential cannot beat through the API)."""
    kv = store.get(credentials.KEY + host) if NAME_RE.match(host) else None
    stored = kv.value.decode(errors="replace") if kv is not None else _DUMMY
    if not hmac.compare_digest(stored, credentials.digest(presented)) or kv is None:
        raise Unauthorized(f"not the heartbeat credential of host {host!r}")
