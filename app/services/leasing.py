"""The HTTP lease protocol for workers in any language: lease, ack, nack, heartbeat. It uses
the claim, the fenced finish and the retry policy of the native fleet."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from starlette.concurrency import run_in_threadpool

from app.dispatch import aio
from app.dispatch.pop import ready_lists
from app.domain.errors import InvalidRequest, JobNotFound, LeaseLost
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


def claim_popped(ctx: Context, job_id: str, worker_id: str, lease_seconds: float) -> Granted | None:
    """Claim a popped id for an HTTP worker; None when it was stale or a duplicate."""
    claimed = execution.claim(ctx, [job_id], HTTP_WORKER_PREFIX + worker_id, lease_seconds)
    if not claimed:
        return None
    with ctx.db.transaction() as session:
        job = JobOut.model_validate(job_store.get_job(session, claimed[0].id, None))
    return Granted(job, claimed[0].lease_token, claimed[0].lease_expires_at)


async def lease_next(
    ctx: Context, queue: str, worker_id: str, lease_seconds: float, wait_seconds: float
) -> Granted | None:
    """The next job of `queue` (highest priority first) for an HTTP worker, waiting up to
    `wait_seconds` on the event loop; None when nothing came, or the queue is paused."""
    client = ctx.aredis.client
    if queue in await aio.paused_queues(client, ctx.keys.paused):
        return None
    lists = ready_lists(ctx.keys, [queue])
    deadline = time.monotonic() + wait_seconds
    while True:
        popped = await aio.pop(client, lists, deadline - time.monotonic())
        if popped is None:
            return None
        granted = await run_in_threadpool(claim_popped, ctx, popped[1], worker_id, lease_seconds)
        if granted is not None:
            return granted
        if time.monotonic() >= deadline:
            return None


def _lost(ctx: Context, job_id: uuid.UUID) -> Exception:
    with ctx.db.transaction() as session:
        exists = job_store.get_job(session, job_id, None) is not None
    return LeaseLost() if exists else JobNotFound()


def _lease(ctx: Context, job_id: uuid.UUID, lease_token: uuid.UUID) -> claims.Lease:
    with ctx.db.transaction() as session:
        lease = claims.current_lease(session, job_id, lease_token)
    if lease is None:
        raise _lost(ctx, job_id)
    return lease


def ack(ctx: Context, job_id: uuid.UUID, lease_token: uuid.UUID, result: Any) -> None:
    try:
        encoded = execution.encode_result(result)
    except execution.ResultNotSerialisable as exc:
        raise InvalidRequest(
            str(exc),
            errors=[{"loc": ["body", "result"], "msg": str(exc), "type": "value_error"}],
        ) from None
    lease = _lease(ctx, job_id, lease_token)
    if not execution.complete(ctx, lease, encoded):
        raise _lost(ctx, job_id)


def nack(ctx: Context, job_id: uuid.UUID, lease_token: uuid.UUID, error: str, retry: bool) -> str:
    """Record a failed attempt; returns where the job went (scheduled, failed, cancelled)."""
    lease = _lease(ctx, job_id, lease_token)
    done = execution.fail(ctx, lease, error, AttemptOutcome.FAILED, retryable=retry)
    if done is None:
        raise _lost(ctx, job_id)
    return done.status.value


@dataclass(frozen=True)
class Extended:
    lease_expires_at: datetime
    cancel_requested: bool


def heartbeat(
    ctx: Context, job_id: uuid.UUID, lease_token: uuid.UUID, lease_seconds: float
) -> Extended:
    extended = execution.extend_lease(ctx, job_id, lease_token, lease_seconds)
    if extended is None:
        raise _lost(ctx, job_id)
    return Extended(*extended)
