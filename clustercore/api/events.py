"""``/api/v1/events``: the event log queried, and followed live as server-sent events."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Query
from fastapi.concurrency import run_in_threadpool
from fastapi.sse import EventSourceResponse, ServerSentEvent

from clustercore.errors import Compacted, ValidationError
from clustercore.events import PREFIX, Event
from clustercore.store.base import EventType, StoreEvent, Watch

from .context import ApiDep, Viewer
from .views import event_view

log = logging.getLogger(__name__)
router = APIRouter(prefix="/events", tags=["events"])
Subject = Annotated[str | None, Query(max_length=300, description="host/NAME, workload/NAME, operation/ID, cluster")]
Kind = Annotated[str | None, Query(max_length=100, description="one kind: heartbeat-missed, migrated, audit...")]
Since = Annotated[float | None, Query(ge=0, le=1e12, description="seconds since the epoch")]


def _matches(event: Event, subject: str | None, kind: str | None, since: float | None) -> bool:
    return ((subject is None or event.subject == subject) and (kind is None or event.kind == kind)
            and (since is None or event.time >= since))


@router.get("", summary="Events in the order they happened, filtered; the newest `limit` of them")
def query_events(api: ApiDep, caller: Viewer, subject: Subject = None, kind: Kind = None, since: Since = None,
                 limit: Annotated[int, Query(ge=1, le=100_000)] = 1000) -> dict[str, Any]:
    events = api.cluster.events.query(subject=subject, kind=kind, since=since)
    return {"events": [event_view(e) for e in events[-limit:]]}


def _decode(changes: list[StoreEvent]) -> list[Event]:
    out = []
    for change in changes:
        if change.type is not EventType.PUT:
            continue  # pruned
        try:
            out.append(Event.from_dict(json.loads(change.kv.value), change.kv.mod_revision))
        except (ValueError, ValidationError):
            continue
    return out


@router.get("/stream", response_class=EventSourceResponse,
            summary="Events as they happen (server-sent events: one `data: {event}` each, its revision as id); "
                    "with since, those since then first")
async def stream_events(api: ApiDep, caller: Viewer, subject: Subject = None, kind: Kind = None,
                        since: Since = None) -> AsyncIterator[ServerSentEvent]:
    start = await run_in_threadpool(lambda: api.store.revision + 1)
    watch: Watch = await run_in_threadpool(api.store.watch, PREFIX, start)
    try:
        if since is not None:
            past = await run_in_threadpool(api.cluster.events.query, subject, kind, since)
            for event in past:
                if event.revision < start:
                    yield ServerSentEvent(data=event_view(event), id=str(event.revision))
        while True:
            try:
                changes = await anyio.to_thread.run_sync(watch.get, 1.0)
            except Compacted:
                log.warning("an event stream fell behind the store's history: following from now")
                watch.cancel()
                watch = await run_in_threadpool(api.store.watch, PREFIX)
                continue
            for event in _decode(changes):
                if _matches(event, subject, kind, None):
                    yield ServerSentEvent(data=event_view(event), id=str(event.revision))
    finally:
        watch.cancel()
