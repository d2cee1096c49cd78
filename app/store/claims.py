"""The claim, the lease, and the fenced finish of a job attempt.

The claim is a conditional UPDATE: only a `queued` job can be claimed, so a duplicate or stale
id popped from Redis claims nothing. Every finish names the lease token it was given, so a
worker that lost its lease (presumed dead, job re-run elsewhere) changes nothing.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from app.domain.states import AttemptOutcome, JobStatus


@dataclass(frozen=True)
class Claimed:
    """What a worker needs to run one attempt."""

    id: uuid.UUID
    tenant: str
    queue: str
    task: str
    payload: Any
    priority: int
    attempt: int
    max_retries: int
    timeout_seconds: int
    lease_token: uuid.UUID
    created_at: datetime
    started_at: datetime


_CLAIM = text(
    """
    UPDATE jobs
       SET status = 'processing',
           attempts = attempts + 1,
           lease_token = gen_random_uuid(),
           lease_expires_at = now() + make_interval(secs => :lease_seconds),
           worker_id = :worker_id,
           started_at = now(),
           updated_at = now()
     WHERE id = ANY(:ids) AND status = 'queued'
    RETURNING id, tenant, queue, task, payload, priority, attempts, max_retries,
              timeout_seconds, lease_token, created_at, started_at
    """
)


def claim(
    session: Session, job_ids: list[uuid.UUID], worker_id: str, lease_seconds: float
) -> list[Claimed]:
    """Claim every id that is still queued; the others were stale or duplicates."""
    rows = session.execute(
        _CLAIM, {"ids": job_ids, "worker_id": worker_id, "lease_seconds": lease_seconds}
    ).all()
    return [
        Claimed(
            id=row.id,
            tenant=row.tenant,
            queue=row.queue,
            task=row.task,
            payload=row.payload,
            priority=row.priority,
            attempt=row.attempts,
            max_retries=row.max_retries,
            timeout_seconds=row.timeout_seconds,
            lease_token=row.lease_token,
            created_at=row.created_at,
            started_at=row.started_at,
        )
        for row in rows
    ]


# One statement closes the attempt: the fenced status change and its job_attempts row commit
# together or not at all.
_FINISH = text(
    """
    WITH finished AS (
        UPDATE jobs
           SET status = :status,
               result = CAST(:result AS jsonb),
               last_error = :error,
               lease_token = NULL,
               lease_expires_at = NULL,
               finished_at = now(),
               updated_at = now()
         WHERE id = :id AND status = 'processing' AND lease_token = :token
        RETURNING id, attempts, worker_id, started_at
    )
    INSERT INTO job_attempts (job_id, attempt, worker_id, started_at, finished_at, outcome, error)
    SELECT id, attempts, worker_id, started_at, now(), :outcome, :error FROM finished
    RETURNING job_id
    """
)


def finish(
    session: Session,
    job_id: uuid.UUID,
    lease_token: uuid.UUID,
    status: JobStatus,
    outcome: AttemptOutcome,
    result_json: str | None = None,
    error: str | None = None,
) -> bool:
    """Close the attempt holding `lease_token`; False when that lease is no longer current."""
    row = session.execute(
        _FINISH,
        {
            "id": job_id,
            "token": lease_token,
            "status": status.value,
            "outcome": outcome.value,
            "result": result_json,
            "error": error,
        },
    ).first()
    return row is not None


_EXTEND = text(
    """
    UPDATE jobs
       SET lease_expires_at = now() + make_interval(secs => :lease_seconds)
     WHERE status = 'processing' AND lease_token = ANY(:tokens)
    RETURNING id, cancel_requested
    """
)


def extend_leases(
    session: Session, lease_tokens: list[uuid.UUID], lease_seconds: float
) -> dict[uuid.UUID, bool]:
    """Push the leases of running jobs forward; maps each job still held to its cancel flag."""
    if not lease_tokens:
        return {}
    rows = session.execute(_EXTEND, {"tokens": lease_tokens, "lease_seconds": lease_seconds}).all()
    return {row.id: row.cancel_requested for row in rows}


_HELD_BY = text(
    """
    SELECT id, lease_token, started_at + make_interval(secs => timeout_seconds) < now() AS overdue
      FROM jobs
     WHERE status = 'processing' AND worker_id = :worker_id
    """
)


@dataclass(frozen=True)
class Held:
    id: uuid.UUID
    lease_token: uuid.UUID
    overdue: bool  # ran past its timeout_seconds


def held_by(session: Session, worker_id: str) -> list[Held]:
    """Jobs a worker process still holds (the manager asks after that process died)."""
    return [
        Held(row.id, row.lease_token, row.overdue)
        for row in session.execute(_HELD_BY, {"worker_id": worker_id}).all()
    ]


_REQUEUE_LOST = text(
    """
    WITH lost AS (
        UPDATE jobs
           SET status = 'queued',
               lease_token = NULL,
               lease_expires_at = NULL,
               last_error = :error,
               run_at = now(),
               updated_at = now()
         WHERE id = :id AND status = 'processing' AND lease_token = :token
        RETURNING id, queue, priority, attempts, worker_id, started_at
    ), attempt AS (
        INSERT INTO job_attempts
               (job_id, attempt, worker_id, started_at, finished_at, outcome, error)
        SELECT id, attempts, worker_id, started_at, now(), 'lost', :error FROM lost
    )
    SELECT id, queue, priority FROM lost
    """
)


def requeue_lost(
    session: Session, job_id: uuid.UUID, lease_token: uuid.UUID, error: str
) -> tuple[str, int] | None:
    """Put a job whose worker died back in its queue (fenced); returns its queue and priority."""
    row = session.execute(
        _REQUEUE_LOST, {"id": job_id, "token": lease_token, "error": error}
    ).first()
    return (row.queue, row.priority) if row is not None else None
