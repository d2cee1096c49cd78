"""Running jobs: claim, finish, the retry policy applied to failures, lease renewal.

Shared by the native fleet, the HTTP lease protocol and recovery, so all follow one set of
rules: every finish is fenced by its lease token, every failure goes through `decide`. Each
runs on a Core connection (`Database.begin`): a worker process loads no ORM.
"""

from __future__ import annotations

import logging
import random
import uuid
from typing import Any

import orjson

from app.dispatch import ready
from app.dispatch.push import Announcement, announce
from app.dispatch.ready import Place
from app.domain.policy import DeadLetter, decide
from app.domain.records import Claimed, Extended, Finished, Held, Lease
from app.domain.states import AttemptOutcome, JobStatus
from app.domain.values import json_problem
from app.metrics import metrics
from app.services.context import Context
from app.store import claims

log = logging.getLogger(__name__)


class ResultNotSerialisable(TypeError):
    """A task returned a value that is not JSON: return dicts, lists, strings, numbers,
    booleans or None."""


def lease_seconds(ctx: Context) -> float:
    """A lease outlives a few missed heartbeats, no more: a dead worker's job is recovered in
    seconds, while a live worker renews its leases at every heartbeat."""
    return float(ctx.settings.heartbeat_ttl_seconds)


def claim(
    ctx: Context,
    job_ids: list[str],
    worker_id: str,
    lease: float | None = None,
    tenant: str | None = None,
) -> list[Claimed]:
    """Claim the ids that are still queued (of `tenant` only, when given)."""
    with ctx.db.begin() as session:
        claimed = claims.claim(
            session,
            [uuid.UUID(j) for j in job_ids],
            worker_id,
            lease or lease_seconds(ctx),
            tenant,
        )
    observed = metrics()
    if len(claimed) < len(job_ids):
        observed.claims_skipped.inc(len(job_ids) - len(claimed))
    for job in claimed:
        observed.job_wait.labels(*ctx.metric_labels.job(job.queue, job.task)).observe(
            max(0.0, (job.started_at - job.run_at).total_seconds())
        )
        log.info(
            "job claimed",
            extra={
                "action": "job_claimed",
                "job_id": str(job.id),
                "worker_id": worker_id,
                "attempt": job.attempt,
            },
        )
    return claimed


def encode_result(result: Any) -> str:
    try:
        encoded = orjson.dumps(result).decode()
    except TypeError as exc:
        raise ResultNotSerialisable(f"the task's result is not JSON-serialisable: {exc}") from exc
    # What Postgres' jsonb (or a client) cannot hold would fail every retry the same way: NUL,
    # integers beyond 64 bits, NaN, lone surrogates, nesting deeper than the API accepts.
    problem = None if result is None else json_problem(result)
    if problem is not None:
        raise ResultNotSerialisable(f"the task's result cannot be stored: {problem}")
    return encoded


def complete(ctx: Context, lease: Lease, result_json: str) -> bool:
    """Record success; False when this lease was lost and the job is someone else's now."""
    with ctx.db.begin() as session:
        done = claims.finish(
            session, lease, JobStatus.COMPLETED, AttemptOutcome.COMPLETED, result_json=result_json
        )
    if done is not None:
        _count_finish(ctx, done, AttemptOutcome.COMPLETED)
    _log_finish(lease, done, error=None)
    return done is not None


def complete_many(ctx: Context, done: list[tuple[Lease, str]]) -> int:
    """Record a group of successes in one transaction; returns how many were still held."""
    if not done:
        return 0
    with ctx.db.begin() as session:
        finished = claims.complete_many(session, done)
    for item in finished:
        _count_finish(ctx, item, AttemptOutcome.COMPLETED)
    if len(finished) < len(done):
        held = {f.id for f in finished}
        for lease, _ in done:
            if lease.id not in held:
                _log_finish(lease, None)
    if log.isEnabledFor(logging.INFO):
        for item in finished:
            log.info(
                "job completed", extra={"action": _ACTIONS[item.status], "job_id": str(item.id)}
            )
    return len(finished)


def fail(
    ctx: Context,
    lease: Lease,
    error: str,
    outcome: AttemptOutcome,
    retryable: bool = True,
    rand: Any = random.random,
) -> Finished | None:
    """Record a failed attempt (fenced) and apply the retry policy: scheduled with backoff
    while retries remain, else failed (the dead-letter queue)."""
    settings = ctx.settings
    decision = decide(
        lease.attempt, lease.max_retries, retryable, settings.retry_base, settings.retry_cap, rand
    )
    with ctx.db.begin() as session:
        if isinstance(decision, DeadLetter):
            done = claims.finish(session, lease, JobStatus.FAILED, outcome, error=error)
        else:
            done = claims.finish(
                session,
                lease,
                JobStatus.SCHEDULED,
                outcome,
                error=error,
                delay_seconds=decision.delay_seconds,
            )
    if done is not None:
        _count_finish(ctx, done, outcome)
        if done.status is JobStatus.SCHEDULED:
            announce_scheduled(ctx, done)
    _log_finish(lease, done, error=error, outcome=outcome.value)
    return done


def announce_scheduled(ctx: Context, done: Finished) -> None:
    announce(
        ctx.redis.client,
        ctx.keys,
        [Announcement(str(done.id), done.queue, done.priority, done.tenant, done.run_at)],
    )


_ACTIONS = {
    JobStatus.COMPLETED: "job_completed",
    JobStatus.SCHEDULED: "job_retry_scheduled",
    JobStatus.FAILED: "job_dead_lettered",
    JobStatus.CANCELLED: "job_cancelled",
}


def _count_finish(ctx: Context, done: Finished, outcome: AttemptOutcome) -> None:
    observed = metrics()
    labels = ctx.metric_labels.job(done.queue, done.task)
    observed.job_duration.labels(*labels).observe(done.duration_seconds)
    if outcome is not AttemptOutcome.COMPLETED:
        observed.jobs_failed.labels(*labels).inc()
    if done.status is JobStatus.COMPLETED:
        observed.jobs_completed.labels(*labels).inc()
    elif done.status is JobStatus.SCHEDULED:
        observed.jobs_retried.labels(*labels).inc()
    elif done.status is JobStatus.FAILED:
        observed.jobs_dead_lettered.labels(*labels).inc()
    else:
        observed.jobs_cancelled.labels(labels[0]).inc()


def _log_finish(lease: Lease, done: Finished | None, **extra: Any) -> None:
    if done is None:
        log.warning(
            "finish refused: lease lost",
            extra={"action": "job_finish_fenced", "job_id": str(lease.id)},
        )
        return
    action = _ACTIONS[done.status]
    if done.status is JobStatus.SCHEDULED:
        extra["run_at"] = done.run_at.isoformat()
    log.info(
        action.replace("_", " "),
        extra={"action": action, "job_id": str(lease.id), "attempt": lease.attempt, **extra},
    )


def unclaim(ctx: Context, leases: list[Lease]) -> None:
    """Give back claimed jobs that never started: queued again at the head of their lists."""
    with ctx.db.begin() as session:
        released = claims.unclaim(session, leases)
    by_place: dict[Place, list[str]] = {}
    for job in released:
        by_place.setdefault(Place(job.queue, job.priority, job.tenant), []).append(str(job.id))
    ready.push_many(ctx.redis.client, ctx.keys, by_place.items(), front=True)


def renew_leases(ctx: Context, leases: list[tuple[uuid.UUID, uuid.UUID]]) -> dict[uuid.UUID, bool]:
    """Renew the leases (job id, lease token) still held; each job's cancel flag."""
    if not leases:
        return {}  # an idle worker's heartbeat: no connection taken for nothing
    with ctx.db.begin() as session:
        return claims.extend_leases(session, leases, lease_seconds(ctx))


def extend_lease(
    ctx: Context, job_id: uuid.UUID, lease_token: uuid.UUID, seconds: float, tenant: str | None
) -> Extended | None:
    with ctx.db.begin() as session:
        return claims.extend_lease(session, job_id, lease_token, seconds, tenant)


def recover(ctx: Context, held: Held, why: str) -> Finished | None:
    """A running job whose worker is gone: a lost attempt, through the retry policy. A job
    that was past its timeout counts as a timeout instead."""
    if held.overdue:
        outcome, error = AttemptOutcome.TIMEOUT, f"timeout: ran past its timeout_seconds ({why})"
    else:
        outcome, error = AttemptOutcome.LOST, f"worker lost: {why}"
    done = fail(ctx, held.lease, error, outcome)
    if done is not None:
        metrics().jobs_recovered.labels(ctx.metric_labels.queue(done.queue)).inc()
        log.warning(
            "job recovered",
            extra={"action": "job_recovered", "job_id": str(held.lease.id), "reason": why},
        )
    return done


def release_dead_worker(ctx: Context, worker_id: str) -> int:
    """After a worker process died, recover every job it held; returns how many."""
    with ctx.db.begin() as session:
        held = claims.held_by(session, worker_id)
    return sum(1 for h in held if recover(ctx, h, f"process {worker_id} died") is not None)
