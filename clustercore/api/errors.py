"""Every failure as one JSON shape: ``{"error": kind, "message": ..., "field": ...}``.

``kind`` is the error's class name (``ValidationError``, ``UnknownHost``...), ``field`` the
dotted field a refusal names (None otherwise). The status says who is to act::

    400  MalformedRequest     the body is not JSON (or YAML) at all, or nests too deep
    401  Unauthorized         no token, or an unknown, wrong, revoked, spent or expired one
    403  Forbidden            a valid token whose role is too low
    404  UnknownHost ...      no such host, workload, operation, token (or route)
    409  Conflict ...         the object's state does not allow it now (InvalidTransition,
                              HostBusy, NotCancellable, WorkloadExists...): nothing changed
    413  TooLarge             a body over 1 MiB, refused before it is read further
    422  ValidationError      unknown field, wrong type, bad value: ``field`` names it
    503  NotLeader, StoreError  the store is away or refused this manager: try again
    500  InternalError        a bug (logged with its traceback; the answer says no more)

Nothing is written by a call that fails with a 4xx. A bad value is echoed back only when
it is no secret (passwords, credentials and tokens never are).
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from clustercore.auth import Forbidden, Unauthorized, UnknownToken
from clustercore.errors import (
    ClusterError,
    Conflict,
    CorruptEntry,
    FlavorError,
    KeyNotFound,
    StoreError,
    UnknownFlavor,
    UnknownHost,
    UnknownWorkload,
    ValidationError,
)
from clustercore.operations import UnknownOperation

from .views import redact, secret_field

log = logging.getLogger(__name__)

NOT_FOUND = (UnknownHost, UnknownWorkload, UnknownOperation, UnknownToken, KeyNotFound)
HTTP_KINDS = {400: "MalformedRequest", 404: "NotFound", 405: "MethodNotAllowed", 413: "TooLarge",
              415: "UnsupportedMediaType"}


class Refused(ClusterError):
    """The API's own refusal of a call the cluster's state does not allow now (409 by
    default), e.g. a second operation on a workload while one is under way."""

    def __init__(self, message: str, status: int = 409, kind: str = "Conflict", field: str | None = None) -> None:
        self.status, self.kind, self.message, self.field = status, kind, message, field
        super().__init__(message)


class Malformed(ClusterError):
    """A body that is not a document at all (400)."""


def body(kind: str, message: str, field: str | None = None) -> dict[str, Any]:
    return {"error": kind, "message": message, "field": field}


def answer(status: int, kind: str, message: str, field: str | None = None,
           headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(body(kind, message, field), status_code=status, headers=headers)


def validation_message(exc: ValidationError) -> str:
    """The error's message with its value only when it is no secret (and not too long)."""
    message = f"invalid {exc.kind}: field {exc.field!r}: {exc.problem}"
    if exc.value is None or secret_field(exc.field):
        return message
    shown = repr(redact(exc.value))
    return f"{message} (got {shown[:200]}{'...' if len(shown) > 200 else ''})"


def classify(exc: Exception) -> tuple[int, str, str, str | None]:
    """(status, kind, message, field) of a domain error."""
    kind = type(exc).__name__
    if isinstance(exc, Refused):
        return exc.status, exc.kind, exc.message, exc.field
    if isinstance(exc, ValidationError):
        return 422, kind, validation_message(exc), exc.field
    if isinstance(exc, UnknownFlavor):
        return 422, kind, str(exc), "flavor"
    if isinstance(exc, Unauthorized):
        return 401, kind, str(exc), None
    if isinstance(exc, Forbidden):
        return 403, kind, str(exc), None
    if isinstance(exc, NOT_FOUND):
        return 404, kind, str(exc), None
    if isinstance(exc, Malformed):
        return 400, "MalformedRequest", str(exc), None
    if isinstance(exc, CorruptEntry):
        return 500, kind, str(exc), None
    if isinstance(exc, Conflict):
        return 409, kind, f"{exc} (changed meanwhile: read it again and retry)", None
    if isinstance(exc, StoreError):
        return 503, kind, f"{exc}: try again", None
    if isinstance(exc, FlavorError):
        return 500, kind, str(exc), None
    return 409, kind, str(exc), None  # the object's state refuses: InvalidTransition, HostBusy...


def _location(loc: tuple[Any, ...]) -> str:
    parts = [p for p in loc if p not in ("body", "query", "path", "header")]
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "<root>"


def install(app: FastAPI) -> None:
    """Register the handlers that turn every error into the one shape."""

    @app.exception_handler(ClusterError)
    async def cluster_error(request: Request, exc: ClusterError) -> JSONResponse:
        status, kind, message, field = classify(exc)
        if status >= 500:
            log.warning("%s %s: %s", request.method, request.url.path, message)
        headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
        return answer(status, kind, message, field, headers)

    @app.exception_handler(RequestValidationError)
    async def request_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        first: dict[str, Any] = dict(errors[0]) if errors else {"loc": (), "msg": "invalid request", "type": ""}
        if first.get("type") == "json_invalid":
            problem = dict(first.get("ctx") or {}).get("error", "JSON decode error")
            return answer(400, "MalformedRequest", f"the body is not JSON: {problem}")
        loc = tuple(first.get("loc", ()))
        field = _location(loc)
        where = loc[0] if loc else "body"
        message = f"invalid {where}: field {field!r}: {first.get('msg', 'invalid')}"
        if first.get("type") == "extra_forbidden":
            message = f"invalid {where}: field {field!r}: unknown field"
        return answer(422, "ValidationError", message, field)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        kind = HTTP_KINDS.get(exc.status_code, "HTTPError")
        message = str(exc.detail) if exc.status_code != 413 else "the request body is over the 1 MiB limit"
        return answer(exc.status_code, kind, message, headers=getattr(exc, "headers", None))

    @app.exception_handler(RecursionError)
    async def too_deep(request: Request, exc: RecursionError) -> JSONResponse:
        return answer(400, "MalformedRequest", "the document nests too deeply")

    @app.exception_handler(Exception)
    async def internal(request: Request, exc: Exception) -> JSONResponse:
        log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
        return answer(500, "InternalError", "internal error (logged on the manager)")
