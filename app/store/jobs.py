"""Job queries. Every status change is a statement declared with its step of the state table
(app/store/transitions.py), guarded by the statuses that step moves jobs out of; callers check
whether a row came back."""

from __future__ import annotations

import uuid
from collections.abc import Collection, Sequence
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import Connection, delete, func, select, text
from sqlalchemy.orm import Session

from app.domain.errors import DatabaseNotReady
from app.domain.filters import JobFilter
from app.domain.records import (
    AttemptRecord,
    BriefJob,
    JobRecord,
    QueueCounts,
    QueueGauges,
)
from app.domain.schemas import JobDefaults
from app.domain.states import JobStatus
from app.store.claims import OF_TENANT
from app.store.dbapi import DbapiSession
from app.store.maintenance import oldest_queued_by_queue
from app.store.models import Job, JobAttempt
from app.store.scans import plain_index_scans
from app.store.transitions import CANCEL, REQUEST_CANCEL, REQUEUE, SUBMIT, guarded


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


_JOB_FIELDS = [f.name for f in fields(JobRecord)]
_JOB_STATUS = _JOB_FIELDS.index("status")
JOB_COLUMNS = ", ".join(_JOB_FIELDS)
# What a batch submit needs back of each job; a single submit returns the whole job.
BRIEF_COLUMNS = ", ".join(BriefJob._fields)
# A dict lookup, not JobStatus(value): a batch turns a thousand statuses per request.
_STATUSES = {status.value: status for status in JobStatus}


# Where the submit path's statements run: a session of ours (the API), or the caller's own
# SQLAlchemy connection or session, or psycopg2 connection (app/enqueue.py).
Executor = Session | Connection | DbapiSession


def _job(row: Sequence[Any]) -> JobRecord:
    values = list(row)
    values[_JOB_STATUS] = _STATUSES[values[_JOB_STATUS]]
    return JobRecord(*values)


def _brief(row: Sequence[Any]) -> BriefJob:
    job_id, tenant, status, queue, task, priority, run_at, key, fingerprint = row
    return BriefJob(
        job_id, tenant, _STATUSES[status], queue, task, priority, run_at, key, fingerprint
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
_INSERT_FULL = guarded(SUBMIT, _INSERT.format(columns=JOB_COLUMNS))
_INSERT_BRIEF = guarded(SUBMIT, _INSERT.format(columns=BRIEF_COLUMNS))


def insert_jobs(
    session: Executor, jobs: list[NewJob], full: bool = True
) -> dict[uuid.UUID, JobRecord | BriefJob]:
    """Insert jobs in one statement; returns the inserted jobs (whole, or brief when not
    `full`) by the ids given. A job whose idempotency key is taken is absent from the result.

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
    record = _job if full else _brief
    inserted = [record(row) for row in rows]
    return {job.id: job for job in inserted}


_BY_KEYS = (
    "SELECT {columns} FROM jobs "
    "WHERE tenant = :tenant AND idempotency_key = ANY(CAST(:keys AS text[]))"
)
_BY_KEYS_FULL = text(_BY_KEYS.format(columns=JOB_COLUMNS))
_BY_KEYS_BRIEF = text(_BY_KEYS.format(columns=BRIEF_COLUMNS))


def get_by_idempotency_keys(
    session: Executor, tenant: str, keys: list[str], full: bool = True
) -> dict[str, JobRecord | BriefJob]:
    """The jobs of `tenant` that hold these idempotency keys, by key."""
    rows = session.execute(
        _BY_KEYS_FULL if full else _BY_KEYS_BRIEF, {"tenant": tenant, "keys": keys}
    )
    record = _job if full else _brief
    jobs = [record(row) for row in rows]
    return {job.idempotency_key: job for job in jobs if job.idempotency_key is not None}


# Transactional enqueue (migration 0007). Postgres delivers a notification on this channel at
# the commit of the transaction that sent it, and never if it rolls back: the listener
# (app/services/listening.py) hears the ids of committed jobs only. jobfleet.enqueue() sends
# the same notification, the job's id as text.
ENQUEUED_CHANNEL = "jobfleet_enqueued"
_NOTIFY_ENQUEUED = text(
    "SELECT pg_notify(:channel, CAST(id AS text)) FROM unnest(CAST(:ids AS uuid[])) AS id"
)


def notify_enqueued(session: Executor, job_ids: list[uuid.UUID]) -> None:
    """Announce new jobs to the listener when (and if) the caller's transaction commits."""
    if job_ids:
        session.execute(
            _NOTIFY_ENQUEUED, {"channel": ENQUEUED_CHANNEL, "ids": [str(i) for i in job_ids]}
        ).all()


_JOB_DEFAULTS = text(
    "SELECT max_retries, timeout_seconds, max_timeout_seconds FROM jobfleet.job_defaults"
)


def job_defaults(session: Executor) -> JobDefaults:
    """The defaults `migrate` published from its settings (jobfleet.job_defaults): what a job
    enqueued in an application's transaction gets when it leaves them out."""
    rows = session.execute(_JOB_DEFAULTS, {}).all()
    if not rows:
        raise DatabaseNotReady(
            "jobfleet.job_defaults is empty: run `python -m app migrate`, which writes it"
        )
    max_retries, timeout_seconds, max_timeout_seconds = rows[0]
    return JobDefaults(int(max_retries), int(timeout_seconds), int(max_timeout_seconds))


_WAITING = text(
    f"""
    SELECT {BRIEF_COLUMNS} FROM jobs
     WHERE id = ANY(CAST(:ids AS uuid[])) AND status || '' IN ('queued', 'scheduled')
    """
)


def waiting_jobs(session: Executor, job_ids: list[str]) -> list[BriefJob]:
    """Those of these jobs that still wait (queued or scheduled), as they are now."""
    rows = session.execute(_WAITING, {"ids": job_ids}).all()
    return [_brief(row) for row in rows]


_JOB = [getattr(Job, name) for name in _JOB_FIELDS]
# For the other query modules of the store: every column of a job, and its record.
JOB_SELECTION = _JOB
job_record = _job


def get_job(session: Session, job_id: uuid.UUID, tenant: str | None) -> JobRecord | None:
    statement = select(*_JOB).where(Job.id == job_id)
    if tenant is not None:
        statement = statement.where(Job.tenant == tenant)
    row = session.execute(statement).first()
    return None if row is None else _job(row)


def job_status(session: Session, job_id: uuid.UUID, tenant: str | None) -> JobStatus | None:
    """The job's status; None when there is no such job of `tenant` (any tenant when None)."""
    statement = select(Job.status).where(Job.id == job_id)
    if tenant is not None:
        statement = statement.where(Job.tenant == tenant)
    status = session.scalar(statement)
    return None if status is None else JobStatus(status)


def attempts_of(session: Session, job_id: uuid.UUID) -> list[AttemptRecord]:
    rows = session.execute(
        select(
            JobAttempt.attempt,
            JobAttempt.worker_id,
            JobAttempt.started_at,
            JobAttempt.finished_at,
            JobAttempt.outcome,
            JobAttempt.error,
        )
        .where(JobAttempt.job_id == job_id)
        .order_by(JobAttempt.id)
    )
    return [AttemptRecord(*row) for row in rows]


_CANCEL = guarded(
    CANCEL,
    f"""
    UPDATE jobs SET status = 'cancelled', finished_at = now(), updated_at = now()
     WHERE id = :id AND status || '' IN ('queued', 'scheduled') AND {OF_TENANT}
    RETURNING {JOB_COLUMNS}
    """,
)


def cancel_waiting(session: Session, job_id: uuid.UUID, tenant: str | None) -> JobRecord | None:
    """Cancel a job that waits (queued or scheduled); None when it is not waiting."""
    row = session.execute(_CANCEL, {"id": job_id, "tenant": tenant}).first()
    return None if row is None else _job(row)


_REQUEST_CANCEL = guarded(
    REQUEST_CANCEL,
    f"""
    UPDATE jobs SET cancel_requested = true, updated_at = now()
     WHERE id = :id AND status || '' = 'processing' AND {OF_TENANT}
    RETURNING {JOB_COLUMNS}
    """,
)


def request_cancel(session: Session, job_id: uuid.UUID, tenant: str | None) -> JobRecord | None:
    """Flag a running job: its worker sees the flag at its next heartbeat, and the job ends
    cancelled when its task returns."""
    row = session.execute(_REQUEST_CANCEL, {"id": job_id, "tenant": tenant}).first()
    return None if row is None else _job(row)


# Back to queued with a fresh retry budget; the attempt history is kept.
_REQUEUED = """
    SET status = 'queued', attempts = 0, result = NULL, last_error = NULL, worker_id = NULL,
        lease_token = NULL, lease_expires_at = NULL, cancel_requested = false,
        started_at = NULL, finished_at = NULL, run_at = now(), updated_at = now()
"""

_REQUEUE = guarded(
    REQUEUE,
    f"""
    UPDATE jobs {_REQUEUED}
     WHERE id = :id AND status || '' = ANY(CAST(:from_states AS text[])) AND {OF_TENANT}
    RETURNING {JOB_COLUMNS}
    """,
)


def requeue(
    session: Session,
    job_id: uuid.UUID,
    tenant: str | None,
    from_states: Collection[JobStatus],
) -> JobRecord | None:
    """Back to queued, if the job is in one of `from_states` (failed or cancelled)."""
    row = session.execute(
        _REQUEUE,
        {"id": job_id, "tenant": tenant, "from_states": REQUEUE.bind_sources(from_states)},
    ).first()
    return None if row is None else _job(row)


# A CTE, not a subquery: Postgres may run a LIMITed subquery of an UPDATE more than once, and
# a CTE with FOR UPDATE runs exactly once. Each absent filter is a NULL parameter.
_REQUEUE_MANY = guarded(
    REQUEUE,
    f"""
    WITH chosen AS (
        SELECT id FROM jobs
         WHERE status = ANY(CAST(:from_states AS text[]))
           AND (CAST(:tenant AS text) IS NULL OR tenant = :tenant)
           AND (CAST(:queue AS text) IS NULL OR queue = :queue)
           AND (CAST(:task AS text) IS NULL OR task = :task)
           AND (CAST(:ids AS uuid[]) IS NULL OR id = ANY(CAST(:ids AS uuid[])))
         ORDER BY finished_at LIMIT :limit
           FOR UPDATE SKIP LOCKED
    )
    UPDATE jobs {_REQUEUED}
     WHERE id IN (SELECT id FROM chosen) AND status = ANY(CAST(:from_states AS text[]))
    RETURNING {JOB_COLUMNS}
    """,
)


def requeue_many(
    session: Session, where: JobFilter, job_ids: list[uuid.UUID] | None, limit: int
) -> list[JobRecord]:
    """Requeue up to `limit` jobs in the filter's status (and of its ids, when given), oldest
    finished first."""
    if where.status is None:
        raise ValueError("requeue_many needs the status to requeue from")
    rows = session.execute(
        _REQUEUE_MANY,
        {
            "from_states": REQUEUE.bind_sources({where.status}),
            "tenant": where.tenant,
            "queue": where.queue,
            "task": where.task,
            "ids": None if job_ids is None else [str(i) for i in job_ids],
            "limit": limit,
        },
    ).all()
    return [_job(row) for row in rows]


def delete_job(
    session: Session,
    job_id: uuid.UUID,
    tenant: str | None,
    from_states: frozenset[JobStatus],
) -> str | None:
    """Delete the job if it is in `from_states`: its tenant, or None when nothing matched."""
    statement = delete(Job).where(Job.id == job_id, Job.status.in_([s.value for s in from_states]))
    if tenant is not None:
        statement = statement.where(Job.tenant == tenant)
    deleted: str | None = session.scalar(statement.returning(Job.tenant))
    return deleted


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
    by_status: dict[str, dict[str, int]] = {}
    oldest: dict[str, datetime] = {}
    for queue, status, count, oldest_queued in rows:
        by_status.setdefault(queue, {})[status] = count
        if oldest_queued is not None:
            oldest[queue] = oldest_queued
    return [QueueCounts(q, by_status[q], oldest.get(q)) for q in sorted(by_status)]


def database_now(session: Session) -> datetime:
    return session.execute(select(func.now())).scalar_one()


def _count_by_queue(session: Session, status: JobStatus) -> dict[str, int]:
    rows = session.execute(
        select(Job.queue, func.count()).where(Job.status == status.value).group_by(Job.queue)
    ).all()
    return {str(queue): int(count) for queue, count in rows}


def cheap_counts(session: Session) -> QueueGauges:
    """Per queue: running jobs and dead-lettered jobs, and the ready-since time of its oldest
    queued job. Every part reads a partial or leading-status index, never the finished jobs'
    history, so a scrape stays cheap however much history the table holds."""
    with plain_index_scans(session):
        processing = _count_by_queue(session, JobStatus.PROCESSING)
    return QueueGauges(
        processing=processing,
        failed=_count_by_queue(session, JobStatus.FAILED),
        oldest_queued_at=oldest_queued_by_queue(session),
    )
