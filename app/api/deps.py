"""Request dependencies: the process context, the caller's identity, scope and rate limit."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool

from app.logging import bind
from app.services import auth, limits
from app.services.auth import Principal, Scope
from app.services.context import Context

bearer = HTTPBearer(auto_error=False, description="An API key: `Authorization: Bearer jf_...`")


async def get_context(request: Request) -> Context:
    # async: a plain attribute read must not cost a hop to the thread pool.
    context: Context = request.app.state.context
    return context


ContextDep = Annotated[Context, Depends(get_context)]


def _principal(
    ctx: ContextDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> Principal:
    header = f"Bearer {credentials.credentials}" if credentials else None
    return auth.authenticate(ctx, header)


# Verifications of a key running now in this process, by event loop, context and key. When a
# key's cache entry expires, every request that arrives with it before Postgres has answered
# waits for the one verification under way: under load, each of them asking on its own took a
# thread each, and each of their updates of the key's last use waited for the one before on the
# same row.
_verifying: dict[tuple[asyncio.AbstractEventLoop, int, str], asyncio.Future[Principal]] = {}


async def _verified(ctx: Context, credentials: HTTPAuthorizationCredentials | None) -> Principal:
    if credentials is None:
        return await run_in_threadpool(_principal, ctx, credentials)  # answers 401
    key = (asyncio.get_running_loop(), id(ctx), credentials.credentials)
    pending = _verifying.get(key)
    if pending is None:
        pending = asyncio.ensure_future(run_in_threadpool(_principal, ctx, credentials))
        _verifying[key] = pending
        pending.add_done_callback(lambda done: _settled(key, done))
    # Shielded: a client that goes away cancels its own wait, not the others'.
    return await asyncio.shield(pending)


def _settled(
    key: tuple[asyncio.AbstractEventLoop, int, str], done: asyncio.Future[Principal]
) -> None:
    _verifying.pop(key, None)
    if not done.cancelled():
        done.exception()  # retrieved here too, for when every waiter has gone away


def caller(scope: Scope, action: str) -> Callable[..., Awaitable[Principal]]:
    """A dependency: the authenticated caller, holding `scope`, within its `action` limit.

    It runs on the event loop and moves to the thread pool only for blocking work: a key not
    verified in the last few seconds. The rate-limit count in Redis is awaited on the loop.
    """

    async def dependency(
        ctx: ContextDep,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    ) -> Principal:
        principal = auth.cached_principal(ctx, credentials.credentials) if credentials else None
        if principal is None:
            principal = await _verified(ctx, credentials)
        bind(tenant=principal.tenant)
        principal.require(scope)
        if limits.enabled(ctx):
            await limits.ahit(ctx, principal, action)
        return principal

    return dependency


Submitter = Annotated[Principal, Depends(caller(Scope.PRODUCER, "submit"))]
BatchSubmitter = Annotated[Principal, Depends(caller(Scope.PRODUCER, "batch"))]
Reader = Annotated[Principal, Depends(caller(Scope.PRODUCER, "read"))]
Writer = Annotated[Principal, Depends(caller(Scope.PRODUCER, "write"))]
Admin = Annotated[Principal, Depends(caller(Scope.ADMIN, "admin"))]
