"""The HTTP lease protocol for workers in any language: lease, ack, nack, heartbeat. It uses
the claim, the fenced finish and the retry policy of the native fleet.

A worker key leases, acks, nacks and heartbeats its own tenant's jobs only: it takes ids from
its tenant's ready lists, and another tenant's job answers exactly as an unknown id does. An
admin key is the operator's: it leases any tenant's jobs, tenants taking turns, as the native
fleet does.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from starlette.concurrency import run_in_threadpool

from app.dispatch import aio
from app.dispatch.ready import Taken
from app.domain.errors import InvalidRequest, JobNotFound, LeaseLost
from app.domain.principal import Principal
from app.domain.records import Extended, Lease
from app.domain.schemas import JobOut
from app.domain.states import AttemptOutcome
from app.services import execution
from app.services.context import Context
from app.store import claims
from app.store import jobs as job_store

HTTP_WORKER_PREFIX = "http:"


@dataclass(frozen=True)
class Granted:
    job: JobOut
    lease_token: uuid.UUID
    lease_expires_at: datetime


def claim_taken(
    ctx: Context, job_id: str, worker_id: str, lease_seconds: float, tenant: str | None
) -> Granted | None:
    """Claim a taken id for an HTTP worker; None when it was stale or a duplicate."""
    claimed = execution.claim(ctx, [job_id], HTTP_WORKER_PREFIX + worker_id, lease_seconds, tenant)
    if not claimed:
        return None
    with ctx.db.transaction() as session:
        job = JobOut.model_validate(job_store.get_job(session, claimed[0].id, None))
    return Granted(job, claimed[0].lease_token, claimed[0].lease_expires_at)


async def lease_next(
    ctx: Context,
    principal: Principal,
    queue: str,
    worker_id: str,
    lease_seconds: float,
    wait_seconds: float,
) -> Granted | None:
    """The next job of `queue` (highest priority first) for an HTTP worker, waiting up to
    `wait_seconds` on the event loop; None when nothing came, or the queue is paused. A worker
    key gets its tenant's jobs only; an admin key any tenant's."""
    deadline = time.monotonic() + wait_seconds
    tenant = principal.tenant_filter
    while True:
        if await _paused(ctx, queue):
            return None
        taken = await _take(ctx, queue, tenant, deadline - time.monotonic())
        if taken is not None:
            granted = await run_in_threadpool(
                claim_taken, ctx, taken.job_ids[0], worker_id, lease_seconds, tenant
            )
            if granted is not None:
                return granted
        if time.monotonic() >= deadline:
            return None


async def _paused(ctx: Context, queue: str) -> bool:
    return queue in await aio.paused_queues(ctx.aredis.client, ctx.keys.paused)


async def _take(ctx: Context, queue: str, tenant: str | None, wait: float) -> Taken | None:
    """One id, waiting up to `wait` (one slice at most) for a push."""
    client, keys = ctx.aredis.client, ctx.keys
    if tenant is not None:
        return await aio.take_tenant(client, keys, queue, tenant, wait)
    taken = await aio.take_any(client, keys, queue)
    if taken is None and wait > 0 and await aio.wait_bell(client, keys, queue, wait):
        taken = await aio.take_any(client, keys, queue)
    return taken


def _lost(ctx: Context, job_id: uuid.UUID, tenant: str | None) -> Exception:
    """Why a lease call found no lease: another tenant's job is as unknown as a missing one."""
    with ctx.db.transaction() as session:
        exists = job_store.job_status(session, job_id, tenant) is not None
    return LeaseLost() if exists else JobNotFound()


def _lease(ctx: Context, job_id: uuid.UUID, lease_token: uuid.UUID, tenant: str | None) -> Lease:
    with ctx.db.transaction() as session:
        lease = claims.current_lease(session, job_id, lease_token, tenant)
    if lease is None:
        raise _lost(ctx, job_id, tenant)
    return lease


def ack(
    ctx: Context, principal: Principal, job_id: uuid.UUID, lease_token: uuid.UUID, result: Any
) -> None:
    try:
        encoded = execution.encode_result(result)
    except execution.ResultNotSerialisable as exc:
        raise InvalidRequest(
            str(exc),
            errors=[{"loc": ["body", "result"], "msg": str(exc), "type": "value_error"}],
        ) from None
    tenant = principal.tenant_filter
    lease = _lease(ctx, job_id, lease_token, tenant)
    if not execution.complete(ctx, lease, encoded):
        raise _lost(ctx, job_id, tenant)


def nack(
    ctx: Context,
    principal: Principal,
    job_id: uuid.UUID,
    lease_token: uuid.UUID,
    error: str,
    retry: bool,
) -> str:
    """Record a failed attempt; returns where the job went (scheduled, failed, cancelled)."""
    tenant = principal.tenant_filter
    lease = _lease(ctx, job_id, lease_token, tenant)
    done = execution.fail(ctx, lease, error, AttemptOutcome.FAILED, retryable=retry)
    if done is None:
        raise _lost(ctx, job_id, tenant)
    return done.status.value


def heartbeat(
    ctx: Context,
    principal: Principal,
    job_id: uuid.UUID,
    lease_token: uuid.UUID,
    lease_seconds: float,
) -> Extended:
    tenant = principal.tenant_filter
    extended = execution.extend_lease(ctx, job_id, lease_token, lease_seconds, tenant)
    if extended is None:
        raise _lost(ctx, job_id, tenant)
    return extended
