"""``/api/v1/operations``: long work (maintenance, migrate, start, stop, delete, upgrade,
fence) with its state, progress and step; cancel where it can be; wait for it."""

from __future__ import annotations

import time
from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Query
from fastapi.concurrency import run_in_threadpool

from .context import ApiDep, Operator, Viewer
from .views import operation_view

router = APIRouter(prefix="/operations", tags=["operations"])
POLL = 0.2


@router.get("", summary="Every operation, oldest first")
def list_operations(api: ApiDep, caller: Viewer) -> dict[str, Any]:
    return {"operations": api.cache.operations_list()}


@router.get("/{op_id}", summary="One operation: state, progress percent, current step, result or error")
def show_operation(op_id: str, api: ApiDep, caller: Viewer) -> dict[str, Any]:
    return operation_view(api.cluster.operation(op_id))


@router.post("/{op_id}/cancel", summary="Ask for an operation to be stopped (409 when it cannot be)")
def cancel_operation(op_id: str, api: ApiDep, caller: Operator) -> dict[str, Any]:
    return operation_view(api.cluster.cancel_operation(op_id, by=caller.name))


@router.get("/{op_id}/wait", summary="Long poll: the operation once done, or as it is after timeout seconds")
async def wait_operation(op_id: str, api: ApiDep, caller: Viewer,
                         timeout: Annotated[float, Query(ge=0, le=300)] = 30.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        op = await run_in_threadpool(api.cluster.operation, op_id)
        left = deadline - time.monotonic()
        if op.state.done or left <= 0:
            return operation_view(op)
        await anyio.sleep(min(POLL, left))
