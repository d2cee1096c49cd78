"""Submitting and steering jobs. Postgres commits first; Redis hears of a job only after."""

from __future__ import annotations

import logging
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import redis
from sqlalchemy.exc import DataError, IntegrityError
from uuid_utils.compat import uuid7

from app.dispatch.push import Announcement, announce
from app.domain.audit import AuditAction
from app.domain.errors import IdempotencyConflict, InvalidTransition, JobNotFound
from app.domain.records import BriefJob, JobRecord
from app.domain.schemas import MAX_BATCH, AttemptOut, JobCreate, JobDefaults, JobDetail, JobOut
from app.domain.states import DELETABLE, RETRYABLE, AttemptOutcome, JobStatus
from app.logging import bind
from app.metrics import metrics
from app.services import audit
from app.services.auth import Principal
from app.services.context import Context
from app.services.groupcommit import GroupCommit
from app.settings import Settings
from app.store import jobs as job_store

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Submitted:
    record: JobRecord | BriefJob  # all of the job for a single submit, brief in a batch
    created: bool  # False: the idempotency key returned an existing job

    @property
    def job(self) -> JobOut:
        return JobOut.model_validate(self.record)


def _announcement(job: JobRecord | BriefJob) -> Announcement:
    scheduled = job.status == JobStatus.SCHEDULED
    return Announcement(
        str(job.id), job.queue, job.priority, job.tenant, job.run_at if scheduled else None
    )


def announce_after_commit(ctx: Context, jobs: Sequence[JobRecord | BriefJob]) -> None:
    """Tell Redis about committed jobs. A failure here loses nothing: the job is a committed
    row, and the reconciler pushes queued jobs that Redis does not hold."""
    if not jobs:
        return
    try:
        announce(ctx.redis.client, ctx.keys, [_announcement(job) for job in jobs])
    except redis.RedisError as exc:
        log.warning(
            "job push failed; the reconciler will push it",
            extra={
                "action": "job_push_failed",
                "error": str(exc),
                "count": len(jobs),
                "job_ids": [str(job.id) for job in jobs[:20]],
            },
        )


def job_defaults(settings: Settings) -> JobDefaults:
    """What POST /jobs gives a job that leaves out its retries or timeout, and the cap."""
    return JobDefaults(
        settings.default_max_retries,
        settings.default_timeout_seconds,
        settings.max_timeout_seconds,
    )


def new_job(defaults: JobDefaults, tenant: str, request: JobCreate) -> job_store.NewJob:
    """The row to insert for a request: a time-ordered id, the defaults applied. Every way a
    job is made (the API, a schedule's fire, a transactional enqueue) goes through here."""
    return job_store.NewJob(
        id=uuid7(),
        tenant=tenant,
        queue=request.queue,
        task=request.task,
        payload=request.payload,
        priority=request.priority,
        idempotency_key=request.idempotency_key,
        fingerprint=request.fingerprint(),
        max_retries=defaults.retries_of(request),
        timeout_seconds=defaults.timeout_of(request),
        run_at=request.run_at,
        delay_seconds=request.delay_seconds,
    )


def _new_job(ctx: Context, principal: Principal, request: JobCreate) -> job_store.NewJob:
    return new_job(job_defaults(ctx.settings), principal.tenant, request)


def _conflict(new: job_store.NewJob, existing: JobRecord | BriefJob) -> IdempotencyConflict:
    return IdempotencyConflict(
        f"idempotency key '{new.idempotency_key}' was used for a different request "
        f"(job {existing.id})",
        job_id=str(existing.id),
    )


def submit_many(
    ctx: Context, principal: Principal, requests: Sequence[JobCreate], full: bool = True
) -> list[Submitted | IdempotencyConflict]:
    """Submit jobs in one transaction and one pipelined push; one result per request, in
    order: the new job, the existing job of a reused key, or the conflict of a key reused
    for a different request. `full=False` reads back only what a batch reply shows."""
    results = _write(ctx, principal, requests, full)
    created = sum(1 for result in results if isinstance(result, Submitted) and result.created)
    log.info(
        "jobs created",
        extra={"action": "job_created", "tenant": principal.tenant, "count": created},
    )
    return results


def insert_or_find(
    session: job_store.Executor, tenant: str, news: list[job_store.NewJob], full: bool
) -> list[Submitted | IdempotencyConflict]:
    """Insert jobs of one tenant inside the caller's transaction; one result per job, in
    order: the new job, the existing job of a reused key, or the conflict of a key reused for
    a different request. The API's submits and transactional enqueues both come here."""
    inserted = job_store.insert_jobs(session, news, full)
    taken = [n for n in news if n.id not in inserted]
    existing: dict[str, JobRecord | BriefJob] = {}
    if taken:
        keys = [n.idempotency_key for n in taken if n.idempotency_key is not None]
        existing = job_store.get_by_idempotency_keys(session, tenant, keys, full)
        # A job holding a key was deleted between our insert and our read: insert again.
        orphans = [n for n in taken if n.idempotency_key not in existing]
        if orphans:
            inserted.update(job_store.insert_jobs(session, orphans, full))
    results: list[Submitted | IdempotencyConflict] = []
    for new in news:
        if new.id in inserted:
            results.append(Submitted(inserted[new.id], created=True))
            continue
        found = existing[new.idempotency_key or ""]
        if found.request_fingerprint != new.fingerprint:
            results.append(_conflict(new, found))
        else:
            results.append(Submitted(found, created=False))
    return results


def _write(
    ctx: Context, principal: Principal, requests: Sequence[JobCreate], full: bool
) -> list[Submitted | IdempotencyConflict]:
    defaults = job_defaults(ctx.settings)
    news = [new_job(defaults, principal.tenant, request) for request in requests]
    with ctx.db.transaction() as session:
        results = insert_or_find(session, principal.tenant, news, full)
    created = [r.record for r in results if isinstance(r, Submitted) and r.created]
    announce_after_commit(ctx, created)
    observed = metrics()
    counts = ctx.metric_labels.job_counts(Counter((job.queue, job.task) for job in created))
    for (queue, task), count in counts.items():
        observed.jobs_created.labels(queue, task).inc(count)
    return results


def submit(ctx: Context, principal: Principal, request: JobCreate) -> Submitted:
    (result,) = _write(ctx, principal, [request], full=True)
    return _single(principal, result)


SingleSubmit = tuple[Context, Principal, JobCreate]


def _submit_group(group: Sequence[SingleSubmit]) -> list[Submitted | IdempotencyConflict]:
    ctx, principal, _ = group[0]  # a group shares its context and tenant (its key)
    return _write(ctx, principal, [request for _, _, request in group], full=True)


# Single submits that arrive together share a transaction and a push (see groupcommit). Only a
# payload Postgres refuses could fail one item of a group, and the schema rejects those first;
# DataError is isolated all the same, so one such request can never fail its neighbours.
_single_submits: GroupCommit[SingleSubmit, Submitted | IdempotencyConflict] = GroupCommit(
    "submit", _submit_group, max_items=MAX_BATCH, isolate=(DataError, IntegrityError)
)


async def submit_grouped(ctx: Context, principal: Principal, request: JobCreate) -> Submitted:
    """Submit one job, sharing the commit with whatever other submits this process has in
    flight. Returns only after the job's row is committed."""
    result = await _single_submits.run((id(ctx), principal.tenant), (ctx, principal, request))
    return _single(principal, result)


def _single(principal: Principal, result: Submitted | IdempotencyConflict) -> Submitted:
    if isinstance(result, IdempotencyConflict):
        raise result
    job = result.record
    # Logged here, in the request's context, not by the flusher thread that wrote it.
    bind(tenant=principal.tenant, job_id=str(job.id), queue=job.queue, task=job.task)
    if result.created:
        log.info("job created", extra={"action": "job_created", "count": 1})
    return result


def get(ctx: Context, principal: Principal, job_id: uuid.UUID) -> JobDetail:
    with ctx.db.transaction() as session:
        job = job_store.get_job(session, job_id, principal.tenant_filter)
        if job is None:
            raise JobNotFound()
        history = [
            AttemptOut(
                attempt=a.attempt,
                worker_id=a.worker_id,
                started_at=a.started_at,
                finished_at=a.finished_at,
                outcome=AttemptOutcome(a.outcome) if a.outcome else None,
                error=a.error,
            )
            for a in job_store.attempts_of(session, job_id)
        ]
        return JobDetail.model_validate(
            {**JobOut.model_validate(job).model_dump(), "history": history}
        )


def _refuse(
    ctx: Context, principal: Principal, job_id: uuid.UUID, action: str
) -> InvalidTransition:
    """Explain why a guarded update matched no row: absent (404) or in the wrong state (409)."""
    with ctx.db.transaction() as session:
        status = job_store.job_status(session, job_id, principal.tenant_filter)
    if status is None:
        raise JobNotFound()
    return InvalidTransition(f"cannot {action} a job that is {status}", job_status=status)


@dataclass(frozen=True)
class Cancelled:
    job: JobOut
    immediate: bool  # False: the job is running; it ends cancelled when its task returns


def cancel(ctx: Context, principal: Principal, job_id: uuid.UUID) -> Cancelled:
    with ctx.db.transaction() as session:
        job = job_store.cancel_waiting(session, job_id, principal.tenant_filter)
        if job is None:
            job = job_store.request_cancel(session, job_id, principal.tenant_filter)
            if job is not None:
                target = audit.job_target([job_id], job.tenant, requested=True)
                audit.record(session, principal, AuditAction.JOB_CANCEL, target)
                bind(tenant=principal.tenant, job_id=str(job_id))
                log.info("job cancel requested", extra={"action": "job_cancel_requested"})
                return Cancelled(JobOut.model_validate(job), immediate=False)
        else:
            target = audit.job_target([job_id], job.tenant)
            audit.record(session, principal, AuditAction.JOB_CANCEL, target)
    if job is None:
        raise _refuse(ctx, principal, job_id, "cancel")
    # Its id may still sit in a Redis list; the claim only takes queued jobs, so it is dropped.
    bind(tenant=principal.tenant, job_id=str(job_id))
    metrics().jobs_cancelled.labels(ctx.metric_labels.queue(job.queue)).inc()
    log.info("job cancelled", extra={"action": "job_cancelled"})
    return Cancelled(JobOut.model_validate(job), immediate=True)


def retry(ctx: Context, principal: Principal, job_id: uuid.UUID) -> JobOut:
    with ctx.db.transaction() as session:
        job = job_store.requeue(session, job_id, principal.tenant_filter, RETRYABLE)
        if job is not None:
            target = audit.job_target([job_id], job.tenant)
            audit.record(session, principal, AuditAction.JOB_RETRY, target)
    if job is None:
        raise _refuse(ctx, principal, job_id, "retry")
    announce_after_commit(ctx, [job])
    bind(tenant=principal.tenant, job_id=str(job_id))
    log.info("job requeued", extra={"action": "job_requeued"})
    return JobOut.model_validate(job)


def delete(ctx: Context, principal: Principal, job_id: uuid.UUID) -> None:
    with ctx.db.transaction() as session:
        tenant = job_store.delete_job(session, job_id, principal.tenant_filter, DELETABLE)
        if tenant is not None:
            target = audit.job_target([job_id], tenant)
            audit.record(session, principal, AuditAction.JOB_DELETE, target)
    if tenant is None:
        raise _refuse(ctx, principal, job_id, "delete")
    bind(tenant=principal.tenant, job_id=str(job_id))
    log.info("job deleted", extra={"action": "job_deleted"})
