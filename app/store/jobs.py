"""Job queries. Every status change is guarded by the status it expects (and, for a running
job, its lease token), and callers check whether a row came back."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import Row, and_, delete, func, or_, select, text, update
from sqlalchemy.orm import Session

from app.domain.filters import JobFilter
from app.domain.states import JobStatus
from app.store.maintenance import oldest_queued_by_queue
from app.store.models import Job, JobAttempt


@dataclass(frozen=True)
class NewJob:
    id: uuid.UUID
    tenant: str
    queue: str
    task: str
    payload: Any
    priority: int
    idempotency_key: str | None
    fingerprint: str
    max_retries: int
    timeout_seconds: int
    run_at: datetime | None
    delay_seconds: float | None


JOB_COLUMNS = (
    "id, tenant, queue, task, payload, priority, status, idempotency_key, request_fingerprint, "
    "attempts, max_retries, timeout_seconds, run_at, result, last_error, worker_id, "
    "lease_token, lease_expires_at, cancel_requested, created_at, updated_at, started_at, "
    "finished_at"
)

# What a batch submit needs back of each job; a single submit returns the whole job.
BRIEF_COLUMNS = (
    "id, tenant, status, queue, task, priority, run_at, idempotency_key, request_fingerprint"
)

# One statement for one job or a thousand: the rows travel as arrays, so the statement text
# (and its plan) never changes with the batch size. run_at is now() unless the job asked for
# a later time; a job whose run_at is in the future starts scheduled.
_INSERT = """
    WITH input AS (
        SELECT * FROM unnest(
            CAST(:ids AS uuid[]), CAST(:tenants AS text[]), CAST(:queues AS text[]),
            CAST(:tasks AS text[]), CAST(:payloads AS text[]), CAST(:priorities AS int[]),
            CAST(:keys AS text[]), CAST(:fingerprints AS text[]), CAST(:retries AS int[]),
            CAST(:timeouts AS int[]), CAST(:run_ats AS timestamptz[]),
            CAST(:delays AS float8[]), CAST(:positions AS int[])
        ) AS i(id, tenant, queue, task, payload, priority, key, fingerprint, retries,
               timeout, run_at, delay, position)
    ), timed AS (
        SELECT *, CASE WHEN run_at IS NOT NULL THEN greatest(run_at, now())
                       WHEN delay > 0 THEN now() + make_interval(secs => delay)
                       ELSE now() END AS ready_at
          FROM input
    )
    INSERT INTO jobs (id, tenant, queue, task, payload, priority, status, idempotency_key,
                      request_fingerprint, max_retries, timeout_seconds, run_at)
    SELECT id, tenant, queue, task, CAST(payload AS jsonb), priority,
           CASE WHEN ready_at > now() THEN 'scheduled' ELSE 'queued' END,
           key, fingerprint, retries, timeout, ready_at
      FROM timed ORDER BY position
    ON CONFLICT (tenant, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
    RETURNING {columns}
    """
_INSERT_FULL = text(_INSERT.format(columns=JOB_COLUMNS))
_INSERT_BRIEF = text(_INSERT.format(columns=BRIEF_COLUMNS))


def insert_jobs(
    session: Session, jobs: list[NewJob], full: bool = True
) -> dict[uuid.UUID, Row[Any]]:
    """Insert jobs in one statement; returns the inserted rows by the ids given. A job whose
    idempotency key is taken is absent from the result.

    ON CONFLICT DO NOTHING waits for a concurrent insert of the same key to commit, so the
    caller's follow-up read always finds the winner: there is no check-then-insert window.
    """
    rows = session.execute(
        _INSERT_FULL if full else _INSERT_BRIEF,
        {
            "ids": [str(j.id) for j in jobs],
            "tenants": [j.tenant for j in jobs],
            "queues": [j.queue for j in jobs],
            "tasks": [j.task for j in jobs],
            "payloads": [orjson.dumps(j.payload).decode() for j in jobs],
            "priorities": [j.priority for j in jobs],
            "keys": [j.idempotency_key for j in jobs],
            "fingerprints": [j.fingerprint for j in jobs],
            "retries": [j.max_retries for j in jobs],
            "timeouts": [j.timeout_seconds for j in jobs],
            "run_ats": [j.run_at for j in jobs],
            "delays": [j.delay_seconds for j in jobs],
            "positions": list(range(len(jobs))),
        },
    ).all()
    return {row.id: row for row in rows}


def get_by_idempotency_keys(
    session: Session, tenant: str, keys: list[str], full: bool = True
) -> dict[str, Row[Any]]:
    columns = JOB_COLUMNS if full else BRIEF_COLUMNS
    rows = session.execute(
        text(
            f"SELECT {columns} FROM jobs "
            "WHERE tenant = :tenant AND idempotency_key = ANY(CAST(:keys AS text[]))"
        ),
        {"tenant": tenant, "keys": keys},
    ).all()
    return {row.idempotency_key: row for row in rows}


def get_job(session: Session, job_id: uuid.UUID, tenant: str | None) -> Job | None:
    statement = select(Job).where(Job.id == job_id)
    if tenant is not None:
        statement = statement.where(Job.tenant == tenant)
    return session.scalars(statement).one_or_none()


def attempts_of(session: Session, job_id: uuid.UUID) -> Sequence[JobAttempt]:
    return session.scalars(
        select(JobAttempt).where(JobAttempt.job_id == job_id).order_by(JobAttempt.id)
    ).all()


def _filtered(statement: Any, where: JobFilter) -> Any:
    if where.tenant is not None:
        statement = statement.where(Job.tenant == where.tenant)
    if where.status is not None:
        statement = statement.where(Job.status == where.status.value)
    if where.queue is not None:
        statement = statement.where(Job.queue == where.queue)
    if where.task is not None:
        statement = statement.where(Job.task == where.task)
    return statement


def list_jobs(
    session: Session,
    where: JobFilter,
    limit: int,
    offset: int,
    after: tuple[datetime, uuid.UUID] | None,
) -> tuple[Sequence[Job], int]:
    """Newest first. `after` (created_at, id of the last row seen) pages without OFFSET's cost."""
    statement = _filtered(select(Job), where)
    if after is not None:
        created_at, job_id = after
        statement = statement.where(
            or_(
                Job.created_at < created_at,
                and_(Job.created_at == created_at, Job.id < job_id),
            )
        )
    rows = session.scalars(
        statement.order_by(Job.created_at.desc(), Job.id.desc()).limit(limit).offset(offset)
    ).all()
    total = session.scalar(_filtered(select(func.count()).select_from(Job), where)) or 0
    return rows, total


def _transition(
    session: Session,
    job_id: uuid.UUID,
    tenant: str | None,
    allowed_from: frozenset[JobStatus],
    **values: Any,
) -> Job | None:
    statement = update(Job).where(Job.id == job_id, Job.status.in_([s.value for s in allowed_from]))
    if tenant is not None:
        statement = statement.where(Job.tenant == tenant)
    return session.scalars(
        statement.values(updated_at=func.now(), **values).returning(Job)
    ).one_or_none()


def request_cancel(session: Session, job_id: uuid.UUID, tenant: str | None) -> Job | None:
    """Flag a running job: its worker sees the flag at its next heartbeat, and the job ends
    cancelled when its task returns."""
    return _transition(
        session, job_id, tenant, frozenset({JobStatus.PROCESSING}), cancel_requested=True
    )


def cancel_waiting(
    session: Session,
    job_id: uuid.UUID,
    tenant: str | None,
    from_states: frozenset[JobStatus],
) -> Job | None:
    return _transition(
        session,
        job_id,
        tenant,
        from_states,
        status=JobStatus.CANCELLED.value,
        finished_at=func.now(),
    )


_REQUEUE_VALUES: dict[str, Any] = {
    "status": JobStatus.QUEUED.value,
    "attempts": 0,
    "result": None,
    "last_error": None,
    "worker_id": None,
    "lease_token": None,
    "lease_expires_at": None,
    "cancel_requested": False,
    "started_at": None,
    "finished_at": None,
}


def requeue(
    session: Session,
    job_id: uuid.UUID,
    tenant: str | None,
    from_states: frozenset[JobStatus],
) -> Job | None:
    """Back to queued with a fresh retry budget; the attempt history is kept."""
    return _transition(session, job_id, tenant, from_states, run_at=func.now(), **_REQUEUE_VALUES)


def requeue_many(
    session: Session, where: JobFilter, job_ids: list[uuid.UUID] | None, limit: int
) -> Sequence[Job]:
    """Requeue up to `limit` jobs matching the filter (and the ids, when given), oldest first."""
    assert where.status is not None
    chosen = _filtered(select(Job.id), where)
    if job_ids is not None:
        chosen = chosen.where(Job.id.in_(job_ids))
    # A CTE, not a subquery: Postgres may run a LIMITed subquery of an UPDATE more than once,
    # and a CTE with FOR UPDATE runs exactly once.
    chosen_cte = (
        chosen.order_by(Job.finished_at).limit(limit).with_for_update(skip_locked=True).cte()
    )
    return session.scalars(
        update(Job)
        .where(Job.id.in_(select(chosen_cte.c.id)), Job.status == where.status.value)
        .values(updated_at=func.now(), run_at=func.now(), **_REQUEUE_VALUES)
        .returning(Job)
    ).all()


def delete_job(
    session: Session,
    job_id: uuid.UUID,
    tenant: str | None,
    from_states: frozenset[JobStatus],
) -> bool:
    statement = delete(Job).where(Job.id == job_id, Job.status.in_([s.value for s in from_states]))
    if tenant is not None:
        statement = statement.where(Job.tenant == tenant)
    return session.execute(statement.returning(Job.id)).first() is not None


@dataclass(frozen=True)
class QueueCounts:
    queue: str
    by_status: dict[str, int]
    oldest_queued_at: datetime | None


def queue_counts(session: Session) -> list[QueueCounts]:
    """Jobs per queue and status, and the oldest runnable queued job of each queue."""
    rows = session.execute(
        select(
            Job.queue,
            Job.status,
            func.count(),
            func.min(Job.run_at).filter(Job.status == JobStatus.QUEUED.value),
        ).group_by(Job.queue, Job.status)
    ).all()
    counts: dict[str, QueueCounts] = {}
    for queue, status, count, oldest in rows:
        entry = counts.setdefault(queue, QueueCounts(queue, {}, None))
        entry.by_status[status] = count
        if oldest is not None:
            counts[queue] = QueueCounts(queue, entry.by_status, oldest)
    return [counts[q] for q in sorted(counts)]


def database_now(session: Session) -> datetime:
    return session.execute(select(func.now())).scalar_one()


def _count_by_queue(session: Session, status: JobStatus) -> dict[str, int]:
    rows = session.execute(
        select(Job.queue, func.count()).where(Job.status == status.value).group_by(Job.queue)
    ).all()
    return {str(queue): int(count) for queue, count in rows}


def cheap_counts(session: Session) -> tuple[dict[str, int], dict[str, int], dict[str, datetime]]:
    """Per queue: running jobs and dead-lettered jobs, and the ready-since time of its oldest
    queued job. Every part reads a partial or leading-status index, never the finished jobs'
    history, so a scrape stays cheap however much history the table holds."""
    processing = _count_by_queue(session, JobStatus.PROCESSING)
    failed = _count_by_queue(session, JobStatus.FAILED)
    oldest = oldest_queued_by_queue(session)
    return processing, failed, oldest
