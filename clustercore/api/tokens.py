"""API tokens, join tokens, and the calls hosts make themselves: join, heartbeats; whoami."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Request, Response
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field

from clustercore import auth
from clustercore.model import HostReport

from .context import Admin, ApiDep, HostCaller, Joiner, Viewer
from .hosts import HostDocument
from .views import host_view

router = APIRouter(tags=["tokens"])


class NewToken(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    name: str = Field(max_length=128, description="who it is for: named in every audit event")
    role: Literal["viewer", "operator", "admin"]


class NewJoinToken(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    host: str = Field(max_length=253, description="the name the host will register under")
    ttl: float = Field(auth.JOIN_TTL, gt=0, le=7 * 86400, description="seconds it stays valid")


@router.get("/whoami", tags=["tokens"], summary="The calling token's name and role")
def whoami(caller: Viewer) -> dict[str, Any]:
    return {"name": caller.name, "role": str(caller.role), "id": caller.token_id}


@router.get("/tokens", summary="Every API token (never a secret)")
def list_tokens(api: ApiDep, caller: Admin) -> dict[str, Any]:
    return {"tokens": [t.view() for t in auth.list_tokens(api.tokens)]}


@router.post("/tokens", status_code=201, summary="A new API token: its secret is in this answer only")
def create_token(new: NewToken, request: Request, api: ApiDep, caller: Admin) -> dict[str, Any]:
    token, secret = auth.issue_token(api.tokens, new.name, new.role, api.now(), by=caller.name)
    request.state.subject = f"token/{token.id}"
    return {**token.view(), "secret": secret}


@router.delete("/tokens/{token_id}", status_code=204, summary="Revoke a token: it fails from now on")
def revoke_token(token_id: str, api: ApiDep, caller: Admin) -> Response:
    auth.revoke_token(api.tokens, token_id, api.now())
    return Response(status_code=204)


@router.post("/tokens/join", status_code=201,
             summary="A one-time join token for a host (clustercore agent --join): its secret is in this answer only")
def create_join_token(new: NewJoinToken, request: Request, api: ApiDep, caller: Admin) -> dict[str, Any]:
    token, secret = auth.issue_join_token(api.store, new.host, api.now(), new.ttl, by=caller.name)
    request.state.subject = f"host/{new.host}"
    return {**token.view(), "secret": secret}


@router.post("/join", status_code=201, tags=["hosts"],
             summary="A host registers itself with a join token (spent by this call): the host, approved, and "
                     "its heartbeat credential")
def join(definition: HostDocument, request: Request, api: ApiDep, caller: Joiner) -> dict[str, Any]:
    host, credential = auth.join_host(api.store, api.cluster.events, caller.secret, definition, api.now(),
                                      seal=api.cluster.writer.secrets.seal_host)
    request.state.subject = f"host/{host.name}"
    return {"host": host_view(host, (), full=True), "credential": credential}


@router.post("/heartbeats/{host}", status_code=204, tags=["hosts"],
             summary="A host's heartbeat (a HostReport), with its heartbeat credential as bearer token")
async def heartbeat(host: str, api: ApiDep, caller: HostCaller,
                    report: Annotated[dict[str, Any] | None, Body()] = None) -> Response:
    parsed = HostReport.from_dict(report or {})
    await run_in_threadpool(api.heartbeat, host, parsed, caller.secret)
    return Response(status_code=204)
