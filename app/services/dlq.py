"""The dead-letter queue: failed jobs, kept with every attempt's error, until replayed."""

from __future__ import annotations

import logging
import uuid

from app.domain.audit import AuditAction
from app.domain.errors import InvalidTransition, JobNotFound
from app.domain.filters import JobFilter, JobQuery
from app.domain.records import DeadLetterGroup
from app.domain.schemas import JobOut
from app.domain.states import JobStatus
from app.logging import bind
from app.services import audit, search
from app.services.auth import Principal
from app.services.context import Context
from app.services.jobs import announce_after_commit
from app.store import jobs as job_store
from app.store import search as search_store

log = logging.getLogger(__name__)

FAILED = frozenset({JobStatus.FAILED})


def _dead_lettered(ctx: Context, principal: Principal, job_id: uuid.UUID) -> InvalidTransition:
    with ctx.db.transaction() as session:
        status = job_store.job_status(session, job_id, principal.tenant_filter)
    if status is None:
        raise JobNotFound()
    return InvalidTransition(f"job is {status}, not in the dead-letter queue", job_status=status)


def replay(ctx: Context, principal: Principal, job_id: uuid.UUID) -> JobOut:
    """failed -> queued with a fresh retry budget; its attempt history stays."""
    with ctx.db.transaction() as session:
        job = job_store.requeue(session, job_id, principal.tenant_filter, FAILED)
        if job is not None:
            target = audit.job_target([job_id], job.tenant)
            audit.record(session, principal, AuditAction.JOB_REPLAY, target)
    if job is None:
        raise _dead_lettered(ctx, principal, job_id)
    announce_after_commit(ctx, [job])
    bind(tenant=principal.tenant, job_id=str(job_id))
    log.info("job replayed", extra={"action": "job_replayed"})
    return JobOut.model_validate(job)


def replay_many(
    ctx: Context,
    principal: Principal,
    queue: str | None,
    task: str | None,
    job_ids: list[uuid.UUID] | None,
    limit: int,
) -> list[JobOut]:
    where = JobFilter(
        tenant=principal.tenant_filter, status=JobStatus.FAILED, queue=queue, task=task
    )
    with ctx.db.transaction() as session:
        jobs = job_store.requeue_many(session, where, job_ids, limit)
        if jobs:
            asked = {"queue": queue, "task": task, "ids": job_ids, "limit": limit}
            target = audit.job_target(
                [job.id for job in jobs], principal.tenant_filter, filter=asked
            )
            audit.record(session, principal, AuditAction.JOB_REPLAY, target)
    announce_after_commit(ctx, jobs)
    log.info("jobs replayed", extra={"action": "jobs_replayed", "count": len(jobs)})
    return [JobOut.model_validate(job) for job in jobs]


def delete(ctx: Context, principal: Principal, job_id: uuid.UUID) -> None:
    with ctx.db.transaction() as session:
        tenant = job_store.delete_job(session, job_id, principal.tenant_filter, FAILED)
        if tenant is not None:
            target = audit.job_target([job_id], tenant)
            audit.record(session, principal, AuditAction.JOB_DELETE, target)
    if tenant is None:
        raise _dead_lettered(ctx, principal, job_id)


def groups(
    ctx: Context, principal: Principal, query: JobQuery, limit: int
) -> list[DeadLetterGroup]:
    """The dead letters that match, grouped by task and error, the largest groups first. Each
    group's `digest` with its task, as a JobQuery's `error_digest`, names its jobs again: to
    list them, or to replay them all in a bulk operation."""
    with ctx.db.transaction() as session:
        return search_store.dead_letter_groups(session, search.scoped(principal, query), limit)
