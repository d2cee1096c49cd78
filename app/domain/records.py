"""What the store hands back: immutable records of jobs, attempts, leases and keys.

The store (app/store) builds these from its rows, so that no SQLAlchemy object, row or `Any`
travels above it: services, routers and workers name these types without importing the store.
Pure data, no I/O.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

from app.domain.states import JobStatus


@dataclass(frozen=True, slots=True)
class JobRecord:
    """A job's row, all of it. `JobOut.model_validate(record)` shapes it for a reply."""

    id: uuid.UUID
    tenant: str
    queue: str
    task: str
    payload: Any  # the JSON document the producer sent
    priority: int
    status: JobStatus
    idempotency_key: str | None
    request_fingerprint: str | None
    attempts: int
    max_retries: int
    timeout_seconds: int
    run_at: datetime
    result: Any  # the JSON document the task returned
    last_error: str | None
    worker_id: str | None
    lease_token: uuid.UUID | None
    lease_expires_at: datetime | None
    cancel_requested: bool
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


class BriefJob(NamedTuple):
    """What a batch submit reads back of each job. A tuple, not a dataclass: a batch builds a
    thousand of these per request, four times faster."""

    id: uuid.UUID
    tenant: str
    status: JobStatus
    queue: str
    task: str
    priority: int
    run_at: datetime
    idempotency_key: str | None
    request_fingerprint: str | None


@dataclass(frozen=True, slots=True)
class JobMatches:
    """One page of a search, and how many jobs match in all."""

    jobs: list[JobRecord]
    total: int  # every match, or the cap when more match
    total_exact: bool  # False: more than `total` match


@dataclass(frozen=True, slots=True)
class DeadLetterGroup:
    """Failed jobs of one task that failed with one error."""

    task: str
    error: str | None  # the last error, its first 2,000 characters (the group is by all of it)
    digest: str  # the group's key: app.domain.filters.error_digest of the whole error
    jobs: int
    latest: datetime | None  # when the latest of them failed


@dataclass(frozen=True, slots=True)
class AttemptRecord:
    """One finished attempt of a job (a `job_attempts` row)."""

    attempt: int
    worker_id: str | None
    started_at: datetime
    finished_at: datetime | None
    outcome: str | None
    error: str | None


@dataclass(frozen=True, slots=True)
class KeyRecord:
    """An API key's row: its HMAC, never the key itself."""

    id: uuid.UUID
    tenant: str
    name: str
    key_hash: str
    scopes: tuple[str, ...]
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


@dataclass(frozen=True, slots=True)
class QueueCounts:
    queue: str
    by_status: dict[str, int]
    oldest_queued_at: datetime | None  # ready-since time of its oldest queued job


@dataclass(frozen=True, slots=True)
class QueueGauges:
    """Per queue, what the scrape-time gauges read from Postgres."""

    processing: dict[str, int]
    failed: dict[str, int]
    oldest_queued_at: dict[str, datetime]


@dataclass(frozen=True, slots=True)
class TableHealth:
    """What Postgres counts of one table (pg_stat_user_tables): row versions alive and dead
    (those VACUUM has not removed yet), when it was last vacuumed (by autovacuum or by hand;
    None: not since the statistics were reset), and whether autovacuum may run on it."""

    table: str
    live_tuples: int
    dead_tuples: int
    last_vacuum: datetime | None
    autovacuum: bool


@dataclass(frozen=True)
class Lease:
    """The attempt a finish refers to: fenced by its token."""

    id: uuid.UUID
    lease_token: uuid.UUID
    attempt: int
    max_retries: int


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
    lease_expires_at: datetime
    created_at: datetime
    run_at: datetime
    started_at: datetime

    @property
    def lease(self) -> Lease:
        return Lease(self.id, self.lease_token, self.attempt, self.max_retries)


@dataclass(frozen=True)
class Finished:
    """Where a finished attempt left its job."""

    id: uuid.UUID
    status: JobStatus
    queue: str
    task: str
    priority: int
    tenant: str
    run_at: datetime
    duration_seconds: float  # of the attempt that just ended


@dataclass(frozen=True)
class Held:
    """A running job's lease, as recovery finds it."""

    lease: Lease
    overdue: bool  # ran past its timeout_seconds


@dataclass(frozen=True)
class Extended:
    """A lease pushed forward."""

    lease_expires_at: datetime
    cancel_requested: bool


@dataclass(frozen=True)
class Ready:
    """A queued job's place in Redis: where its id belongs."""

    id: uuid.UUID
    queue: str
    priority: int
    tenant: str


@dataclass(frozen=True)
class ReadyList:
    """One ready list's place: the queue, tenant and priority of some queued jobs."""

    queue: str
    tenant: str
    priority: int
