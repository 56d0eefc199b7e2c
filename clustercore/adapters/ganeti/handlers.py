"""The IAllocator answer for a request file: checked (:func:`cluster.check`), then
answered by the port of hail (:mod:`.hmodes`), ``{"success", "info", "result"}``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from clustercore.adapters.ganeti import hmodes
from clustercore.adapters.ganeti.cluster import check
from clustercore.adapters.ganeti.validate import RequestError, check_document, decode, need, show


def reply(success: bool, info: str, result: Any) -> dict[str, Any]:
    """An IAllocator answer."""
    return {"success": success, "info": info, "result": result}


#: Every request type, answered by the port of hail's own algorithm (hmodes), with hail's options.
HANDLERS = {"allocate": hmodes.allocate, "multi-allocate": hmodes.multi_allocate, "relocate": hmodes.relocate,
            "node-evacuate": hmodes.node_evacuate, "change-group": hmodes.change_group,
            "allocate-secondary": hmodes.allocate_secondary}


def answer(data: Any, flags: Sequence[str] = ()) -> dict[str, Any]:
    """The IAllocator answer for a parsed request; never raises. Every refusal is a
    RequestError ("Invalid request: ..."); anything else is a bug the net below turns into
    an answer ("unexpected ..." in its info) rather than a traceback."""
    return _answer(data, flags, checked=False)


def _answer(data: Any, flags: Sequence[str], checked: bool) -> dict[str, Any]:
    """:func:`answer`; ``checked``: ``data`` came from :func:`decode`, which checked it."""
    try:
        opts = hmodes.options(flags)
        if not checked:
            check_document(data)
        request = check(data)
        kind = need(request, "type", str, "request")
        handler = HANDLERS.get(kind)
        if handler is None:
            raise RequestError(f"request.type: unsupported {show(kind)} (supported: {', '.join(HANDLERS)})")
        return handler(data, request, opts)
    except RequestError as exc:
        return reply(False, f"Invalid request: {exc}", [])
    except (KeyError, TypeError, ValueError, AttributeError, IndexError, ArithmeticError, RecursionError) as exc:
        return reply(False, f"Invalid request (unexpected {type(exc).__name__}): {show(str(exc))}", [])


def answer_text(text: str | bytes, flags: Sequence[str] = ()) -> dict[str, Any]:
    """The answer for a request file's contents: what ``clustercore-iallocator`` prints.
    Never raises (undecodable JSON, ``NaN``, deep nesting are ``success: false``)."""
    try:
        data = decode(text)
    except RequestError as exc:
        return reply(False, f"Invalid request: {exc}", [])
    return _answer(data, flags, checked=True)
