"""What the console's routes need, made once in the gateway's lifespan (``app.state.console``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import asyncpg
from fastapi import APIRouter, Depends, Query, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from redis.asyncio import Redis

from gateway import auth
from gateway.auth import Principal
from gateway.wire import refused
from infra.publish import Publisher
from infra.settings import Settings


@dataclass
class ConsoleDeps:
    settings: Settings
    pg: asyncpg.Pool  # the archive and the registry
    redis: Redis
    publisher: Publisher  # an operator's requeue, and its audit record


def console_deps(request: Request) -> ConsoleDeps:
    deps: ConsoleDeps = request.app.state.console
    return deps


Deps = Annotated[ConsoleDeps, Depends(console_deps)]


_bearer = HTTPBearer(auto_error=False, description="a supervisor's or operator's token")


def console_caller(
    request: Request,
    creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    token: Annotated[str | None, Query(description="the token where no header fits")] = None,
) -> Principal:
    """The caller, if a supervisor or an operator (401 without a valid token, 403 otherwise)."""
    who = request.app.state.parts.gateway.who(creds.credentials if creds else token)
    auth.must_supervise(who)
    return who  # type: ignore[no-any-return]


# A console route's caller: a supervisor or an operator (use ``auth.must_operate`` to write).
Supervisor = Annotated[Principal, Depends(console_caller)]


def console_router() -> APIRouter:
    """A console part's router: every route refuses a caller without a valid token (401) and
    one who neither supervises nor operates (403), and says so in OpenAPI."""
    return APIRouter(
        prefix="/api/v1/console",
        tags=["console"],
        responses=refused(401, "no valid token (missing, expired or forged)")
        | refused(403, "not a supervisor's or an operator's token"),
    )
