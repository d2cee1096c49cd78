"""The tables. Timestamps are timestamptz filled by Postgres (`now()`), never by Python."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    SmallInteger,
    String,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, UUID
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

STATUSES = "'queued','scheduled','processing','completed','failed','cancelled'"


class Base(DeclarativeBase):
    pass


def _now_column(nullable: bool = False) -> Any:
    return mapped_column(DateTime(timezone=True), server_default=func.now(), nullable=nullable)


class Job(Base):
    __tablename__ = "jobs"

    id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), primary_key=True, server_default=text("gen_random_uuid()")
    )
    tenant: Mapped[str] = mapped_column(String(128))
    queue: Mapped[str] = mapped_column(String(64))
    task: Mapped[str] = mapped_column(String(128))
    payload: Mapped[Any] = mapped_column(JSONB, server_default=text("'{}'::jsonb"))
    priority: Mapped[int] = mapped_column(SmallInteger, server_default=text("0"))
    status: Mapped[str] = mapped_column(String(16))
    idempotency_key: Mapped[str | None] = mapped_column(String(255))
    request_fingerprint: Mapped[str | None] = mapped_column(String(64))
    attempts: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    max_retries: Mapped[int] = mapped_column(Integer)
    timeout_seconds: Mapped[int] = mapped_column(Integer)
    run_at: Mapped[datetime] = _now_column()
    result: Mapped[Any | None] = mapped_column(JSONB)
    last_error: Mapped[str | None] = mapped_column(Text)
    worker_id: Mapped[str | None] = mapped_column(String(255))
    lease_token: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    lease_expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    cancel_requested: Mapped[bool] = mapped_column(server_default=text("false"))
    created_at: Mapped[datetime] = _now_column()
    updated_at: Mapped[datetime] = _now_column()
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        CheckConstraint(f"status IN ({STATUSES})", name="ck_jobs_status"),
        CheckConstraint("priority BETWEEN 0 AND 9", name="ck_jobs_priority"),
        # Idempotency: one job per (tenant, key); INSERT ... ON CONFLICT relies on it.
        Index(
            "uq_jobs_tenant_idempotency_key",
            "tenant",
            "idempotency_key",
            unique=True,
            postgresql_where=text("idempotency_key IS NOT NULL"),
        ),
        # The promoter's "due scheduled jobs"; finished jobs stay out of it (migration 0002).
        Index("ix_jobs_scheduled_run_at", "run_at", postgresql_where=text("status = 'scheduled'")),
        Index("ix_jobs_tenant_created", "tenant", "created_at", "id"),
        Index("ix_jobs_created", "created_at", "id"),
        # Searches (migration 0004): a queue's or a task's jobs newest first, containment in
        # payloads, substrings of errors (pg_trgm; absent when the server lacks contrib).
        Index("ix_jobs_queue_created", "queue", "created_at", "id"),
        Index("ix_jobs_task_created", "task", "created_at", "id"),
        Index(
            "ix_jobs_failed_by_queue",
            "queue",
            "tenant",
            postgresql_where=text("status = 'failed'"),
        ),
        Index(
            "ix_jobs_payload",
            "payload",
            postgresql_using="gin",
            postgresql_ops={"payload": "jsonb_path_ops"},
        ),
        Index(
            "ix_jobs_last_error_trgm",
            "last_error",
            postgresql_using="gin",
            postgresql_ops={"last_error": "gin_trgm_ops"},
            postgresql_where=text("last_error IS NOT NULL"),
        ),
        # Ready lists are per queue, tenant and priority (Redis): the reconciler's sweep walks
        # the distinct lists of queued jobs and compares each list's head with this order.
        Index(
            "ix_jobs_queued_by_tenant",
            "queue",
            "tenant",
            "priority",
            "run_at",
            postgresql_where=text("status = 'queued'"),
        ),
        # Retention deletes finished jobs oldest first.
        Index(
            "ix_jobs_finished",
            "status",
            "finished_at",
            postgresql_where=text("status IN ('completed', 'failed', 'cancelled')"),
        ),
        # Running jobs, by lease token (migration 0008): a random key, so that new entries
        # land all over the index and reclaim the dead ones scans have marked, without VACUUM.
        Index(
            "ix_jobs_processing_token",
            "lease_token",
            postgresql_where=text("status = 'processing'"),
        ),
        # A schedule's jobs by their idempotency keys, in byte order (migration 0006).
        Index(
            "ix_jobs_schedule_key",
            "tenant",
            text('(idempotency_key COLLATE "C")'),
            postgresql_where=text("idempotency_key LIKE 'schedule:%'"),
        ),
    )


class JobAttempt(Base):
    __tablename__ = "job_attempts"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    job_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("jobs.id", ondelete="CASCADE")
    )
    attempt: Mapped[int] = mapped_column(Integer)
    worker_id: Mapped[str | None] = mapped_column(String(255))
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = _now_column(nullable=True)
    outcome: Mapped[str | None] = mapped_column(String(16))
    error: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (Index("ix_job_attempts_job", "job_id", "id"),)


class JobStats(Base):
    """Jobs that completed and failed, per minute of their finished_at, queue and tenant:
    written by the stats duty, read by the overview, deleted by retention."""

    __tablename__ = "job_stats"

    minute: Mapped[datetime] = mapped_column(DateTime(timezone=True), primary_key=True)
    queue: Mapped[str] = mapped_column(String(64), primary_key=True)
    tenant: Mapped[str] = mapped_column(String(128), primary_key=True)
    completed: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    failed: Mapped[int] = mapped_column(Integer, server_default=text("0"))

    __table_args__ = (Index("ix_job_stats_tenant_minute", "tenant", "minute"),)


class StatsMark(Base):
    """How far the stats duty has counted (finished_at before `through`), by table."""

    __tablename__ = "stats_marks"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    through: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class ApiKey(Base):
    __tablename__ = "api_keys"

    id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), primary_key=True, server_default=text("gen_random_uuid()")
    )
    tenant: Mapped[str] = mapped_column(String(128))
    name: Mapped[str] = mapped_column(String(128), server_default=text("''"))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    scopes: Mapped[list[str]] = mapped_column(ARRAY(String(16)))
    created_at: Mapped[datetime] = _now_column()
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class AuditEvent(Base):
    """Append-only: a trigger refuses every UPDATE, and any DELETE of a row younger than a
    day (retention removes old rows only); see migration 0005."""

    __tablename__ = "audit_events"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = _now_column()
    actor: Mapped[str] = mapped_column(String(8))
    key_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    tenant: Mapped[str | None] = mapped_column(String(128))
    action: Mapped[str] = mapped_column(String(32))
    target: Mapped[Any] = mapped_column(JSONB, server_default=text("'{}'::jsonb"))
    request_id: Mapped[str | None] = mapped_column(String(128))

    __table_args__ = (
        CheckConstraint("actor IN ('key', 'cli')", name="ck_audit_events_actor"),
        # Newest first within each filter (keyset on id); retention and `since` read `at`.
        Index("ix_audit_events_tenant", "tenant", "id"),
        Index("ix_audit_events_key", "key_id", "id"),
        Index("ix_audit_events_action", "action", "id"),
        Index("ix_audit_events_at", "at"),
    )


BULK_ACTIONS = "'cancel','retry','replay','delete'"
BULK_STATES = "'pending','running','done','cancelled'"


class BulkOperation(Base):
    __tablename__ = "bulk_operations"

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    owner: Mapped[str] = mapped_column(String(128))
    key_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    action: Mapped[str] = mapped_column(String(16))
    query: Mapped[Any] = mapped_column(JSONB)
    state: Mapped[str] = mapped_column(String(16))
    total: Mapped[int] = mapped_column(BigInteger)
    done: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    skipped: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    position: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    last_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    created_at: Mapped[datetime] = _now_column()
    updated_at: Mapped[datetime] = _now_column()
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    request_id: Mapped[str | None] = mapped_column(String(128))

    __table_args__ = (
        CheckConstraint(f"action IN ({BULK_ACTIONS})", name="ck_bulk_operations_action"),
        CheckConstraint(f"state IN ({BULK_STATES})", name="ck_bulk_operations_state"),
        # The duty's list of operations to advance, oldest first.
        Index(
            "ix_bulk_operations_active",
            "created_at",
            postgresql_where=text("state IN ('pending', 'running')"),
        ),
        # A tenant's operations, newest first (ids are UUIDv7: time-ordered).
        Index("ix_bulk_operations_owner", "owner", "id"),
        # Retention of finished operations.
        Index(
            "ix_bulk_operations_finished",
            "finished_at",
            postgresql_where=text("state IN ('done', 'cancelled')"),
        ),
    )


MISFIRE_POLICIES = "'skip','run_latest'"


class Schedule(Base):
    """A tenant's cron schedule and the template of the jobs it creates (migration 0006)."""

    __tablename__ = "schedules"

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    tenant: Mapped[str] = mapped_column(String(128))
    name: Mapped[str] = mapped_column(String(128))
    cron: Mapped[str] = mapped_column(Text)
    timezone: Mapped[str] = mapped_column(Text)
    task: Mapped[str] = mapped_column(String(128))
    payload: Mapped[Any] = mapped_column(JSONB, server_default=text("'{}'::jsonb"))
    queue: Mapped[str] = mapped_column(String(64))
    priority: Mapped[int] = mapped_column(SmallInteger, server_default=text("0"))
    max_retries: Mapped[int | None] = mapped_column(Integer)
    timeout_seconds: Mapped[int | None] = mapped_column(Integer)
    enabled: Mapped[bool] = mapped_column(server_default=text("true"))
    misfire_policy: Mapped[str] = mapped_column(String(16))
    next_fire_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    last_fired_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = _now_column()
    updated_at: Mapped[datetime] = _now_column()

    __table_args__ = (
        CheckConstraint(
            f"misfire_policy IN ({MISFIRE_POLICIES})", name="ck_schedules_misfire_policy"
        ),
        CheckConstraint("priority BETWEEN 0 AND 9", name="ck_schedules_priority"),
        UniqueConstraint("tenant", "name", name="uq_schedules_tenant_name"),
        # The duty's due schedules; paused ones stay out of it.
        Index("ix_schedules_due", "next_fire_at", postgresql_where=text("enabled")),
    )
