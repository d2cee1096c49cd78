"""Schedule rows: insert, read, change, delete; the due ones, locked for a round of the
schedules duty; and a schedule's latest jobs, found by their idempotency keys.

Tenant walls: every read and change of one schedule takes the tenant it must belong to
(None: any tenant, an admin's key).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Row, delete, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.domain.records import JobRecord
from app.domain.schedules import MisfirePolicy, ScheduleRecord, key_range
from app.store.jobs import JOB_COLUMNS, job_record
from app.store.models import Schedule

_SCHEDULE = (
    Schedule.id,
    Schedule.tenant,
    Schedule.name,
    Schedule.cron,
    Schedule.timezone,
    Schedule.task,
    Schedule.payload,
    Schedule.queue,
    Schedule.priority,
    Schedule.max_retries,
    Schedule.timeout_seconds,
    Schedule.enabled,
    Schedule.misfire_policy,
    Schedule.next_fire_at,
    Schedule.last_fired_at,
    Schedule.created_at,
    Schedule.updated_at,
)
_POLICY = 12  # the position of misfire_policy in _SCHEDULE
_UNIQUE_NAME = "uq_schedules_tenant_name"


def _schedule(row: Row[Any]) -> ScheduleRecord:
    values = list(row)
    values[_POLICY] = MisfirePolicy(values[_POLICY])
    return ScheduleRecord(*values)


@dataclass(frozen=True)
class NewSchedule:
    id: uuid.UUID
    tenant: str
    name: str
    cron: str
    timezone: str
    task: str
    payload: Any
    queue: str
    priority: int
    max_retries: int | None
    timeout_seconds: int | None
    enabled: bool
    misfire_policy: MisfirePolicy
    next_fire_at: datetime


def insert_schedule(session: Session, new: NewSchedule) -> ScheduleRecord | None:
    """The new schedule; None when its tenant already has one of that name."""
    values = {**new.__dict__, "misfire_policy": new.misfire_policy.value}
    statement = (
        pg_insert(Schedule)
        .values(**values)
        .on_conflict_do_nothing(constraint=_UNIQUE_NAME)
        .returning(*_SCHEDULE)
    )
    row = session.execute(statement).first()
    return None if row is None else _schedule(row)


def _one(schedule_id: uuid.UUID, tenant: str | None) -> Any:
    statement = select(*_SCHEDULE).where(Schedule.id == schedule_id)
    if tenant is not None:
        statement = statement.where(Schedule.tenant == tenant)
    return statement


def get_schedule(
    session: Session, schedule_id: uuid.UUID, tenant: str | None
) -> ScheduleRecord | None:
    row = session.execute(_one(schedule_id, tenant)).first()
    return None if row is None else _schedule(row)


def lock_schedule(
    session: Session, schedule_id: uuid.UUID, tenant: str | None
) -> ScheduleRecord | None:
    """The schedule, locked until the transaction ends: a change made under this lock and a
    round of the duty never interleave (the duty skips a locked schedule until the next round)."""
    row = session.execute(_one(schedule_id, tenant).with_for_update()).first()
    return None if row is None else _schedule(row)


def list_schedules(
    session: Session, tenant: str | None, limit: int, after: uuid.UUID | None
) -> list[ScheduleRecord]:
    """Oldest first (ids are UUIDv7: time-ordered), after the id `after`."""
    statement = select(*_SCHEDULE)
    if tenant is not None:
        statement = statement.where(Schedule.tenant == tenant)
    if after is not None:
        statement = statement.where(Schedule.id > after)
    rows = session.execute(statement.order_by(Schedule.id).limit(limit)).all()
    return [_schedule(row) for row in rows]


def update_schedule(
    session: Session, schedule_id: uuid.UUID, changes: dict[str, Any]
) -> ScheduleRecord | None:
    """Write `changes` (column: value) to a schedule the caller has locked; None when a new
    name is another schedule's of the tenant (nothing is written, the transaction goes on)."""
    values = dict(changes)
    if isinstance(values.get("misfire_policy"), MisfirePolicy):
        values["misfire_policy"] = values["misfire_policy"].value
    statement = (
        update(Schedule)
        .where(Schedule.id == schedule_id)
        .values(**values, updated_at=text("now()"))
        .returning(*_SCHEDULE)
    )
    try:
        with session.begin_nested():  # a savepoint: a refused name leaves the rest intact
            row = session.execute(statement).one()
    except IntegrityError as exc:
        if getattr(getattr(exc.orig, "diag", None), "constraint_name", None) == _UNIQUE_NAME:
            return None
        raise
    return _schedule(row)


def delete_schedule(session: Session, schedule_id: uuid.UUID, tenant: str | None) -> str | None:
    """Delete it: its tenant, or None when there was no such schedule of `tenant`."""
    statement = delete(Schedule).where(Schedule.id == schedule_id)
    if tenant is not None:
        statement = statement.where(Schedule.tenant == tenant)
    deleted: str | None = session.scalar(statement.returning(Schedule.tenant))
    return deleted


def lock_due(session: Session, now: datetime, limit: int) -> list[ScheduleRecord]:
    """Enabled schedules due at `now`, soonest first, locked; rows another transaction holds
    (a runner firing them, a change in flight) are skipped: the next round takes them."""
    rows = session.execute(
        select(*_SCHEDULE)
        .where(Schedule.enabled, Schedule.next_fire_at <= now)
        .order_by(Schedule.next_fire_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    ).all()
    return [_schedule(row) for row in rows]


def advance(
    session: Session, schedule_id: uuid.UUID, next_fire_at: datetime, fired_at: datetime | None
) -> None:
    """Move a locked schedule to its next fire time; `fired_at`: the latest fire time it
    fired in this round, if any."""
    values: dict[str, Any] = {"next_fire_at": next_fire_at}
    if fired_at is not None:
        values["last_fired_at"] = fired_at
    session.execute(update(Schedule).where(Schedule.id == schedule_id).values(**values))


# The partial index of migration 0006 serves this: its predicate is repeated word for word
# (Postgres uses a partial index only when the query implies its predicate), and the keys are
# compared in byte order, as the index holds them.
RECENT_JOBS_SQL = text(
    f"""
    SELECT {JOB_COLUMNS} FROM jobs
     WHERE tenant = :tenant AND idempotency_key LIKE 'schedule:%'
       AND idempotency_key COLLATE "C" >= :low AND idempotency_key COLLATE "C" < :high
     ORDER BY idempotency_key COLLATE "C" DESC
     LIMIT :limit
    """
)


def recent_jobs(
    session: Session, tenant: str, schedule_id: uuid.UUID, limit: int
) -> list[JobRecord]:
    """The schedule's latest jobs, newest fire time (or manual run) first."""
    low, high = key_range(schedule_id)
    rows = session.execute(
        RECENT_JOBS_SQL, {"tenant": tenant, "low": low, "high": high, "limit": limit}
    ).all()
    return [job_record(row) for row in rows]
