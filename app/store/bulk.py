"""Bulk operations: their rows, the keyset walk over the jobs that match their filter, and the
guarded changes each batch makes to those jobs.

A batch is two statements in one transaction: the next ids that match (in id order, after the
operation's position), then a guarded change of those ids. A job that changed state between
the two (claimed, cancelled, replayed by someone else) fails the guard and is counted as
skipped; the guard re-reads the row it waited for, so no job moves out of a status the state
table does not allow.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy import Row, Select, func, insert, select, text, update
from sqlalchemy.orm import Session

from app.domain.bulk import (
    ACTIVE_STATES,
    BulkAction,
    BulkOperation,
    BulkQuery,
    BulkState,
    query_from_json,
    query_to_json,
)
from app.domain.records import JobRecord
from app.domain.states import JobStatus
from app.store.claims import OF_TENANT
from app.store.jobs import _REQUEUED, JOB_COLUMNS, _job
from app.store.models import BulkOperation as BulkRow
from app.store.models import Job
from app.store.search import conditions
from app.store.transitions import CANCEL, REQUEUE, guarded

_OPERATION = (
    BulkRow.id,
    BulkRow.owner,
    BulkRow.key_id,
    BulkRow.action,
    BulkRow.query,
    BulkRow.state,
    BulkRow.total,
    BulkRow.done,
    BulkRow.skipped,
    BulkRow.created_at,
    BulkRow.updated_at,
    BulkRow.finished_at,
    BulkRow.request_id,
    BulkRow.position,
    BulkRow.last_id,
)
_ACTIVE = [state.value for state in ACTIVE_STATES]


def _operation(row: Row[Any]) -> BulkOperation:
    values = list(row)
    values[3] = BulkAction(values[3])
    values[4] = query_from_json(values[4])
    values[5] = BulkState(values[5])
    return BulkOperation(*values)


# --- the jobs an operation walks ----------------------------------------------------------


_Selected = TypeVar("_Selected", bound=Select[Any])


def _matching(statement: _Selected, query: BulkQuery, statuses: Collection[JobStatus]) -> _Selected:
    """Narrowed to the jobs of the filter (the terms of the job search) in the statuses the
    action moves."""
    in_statuses = Job.status.in_(sorted(s.value for s in statuses))
    return statement.where(*conditions(query), in_statuses)


def count_matching(session: Session, query: BulkQuery, statuses: Collection[JobStatus]) -> int:
    counted = _matching(select(func.count()).select_from(Job), query, statuses)
    return int(session.scalar(counted) or 0)


def last_matching(
    session: Session, query: BulkQuery, statuses: Collection[JobStatus]
) -> uuid.UUID | None:
    """The largest id that matches: the walk stops there, so jobs submitted after the
    operation started are not chased."""
    found: uuid.UUID | None = session.scalar(
        _matching(select(Job.id), query, statuses).order_by(Job.id.desc()).limit(1)
    )
    return found


def next_ids(
    session: Session,
    query: BulkQuery,
    statuses: Collection[JobStatus],
    after: uuid.UUID | None,
    last_id: uuid.UUID,
    limit: int,
) -> list[uuid.UUID]:
    """Up to `limit` matching ids after `after`, up to `last_id`, in id order."""
    statement = _matching(select(Job.id), query, statuses).where(Job.id <= last_id)
    if after is not None:
        statement = statement.where(Job.id > after)
    return list(session.scalars(statement.order_by(Job.id).limit(limit)).all())


_CANCEL_IDS = guarded(
    CANCEL,
    f"""
    UPDATE jobs SET status = 'cancelled', finished_at = now(), updated_at = now()
     WHERE id = ANY(CAST(:ids AS uuid[])) AND status || '' = ANY(CAST(:from_states AS text[]))
       AND {OF_TENANT}
    RETURNING {JOB_COLUMNS}
    """,
)

_REQUEUE_IDS = guarded(
    REQUEUE,
    f"""
    UPDATE jobs {_REQUEUED}
     WHERE id = ANY(CAST(:ids AS uuid[])) AND status || '' = ANY(CAST(:from_states AS text[]))
       AND {OF_TENANT}
    RETURNING {JOB_COLUMNS}
    """,
)

_DELETE_IDS = text(
    f"""
    DELETE FROM jobs
     WHERE id = ANY(CAST(:ids AS uuid[])) AND status || '' = ANY(CAST(:from_states AS text[]))
       AND {OF_TENANT}
    RETURNING id
    """
)


def cancel_ids(
    session: Session, ids: list[uuid.UUID], tenant: str | None, from_states: Collection[JobStatus]
) -> list[JobRecord]:
    """Cancel those of the jobs still in `from_states` (queued, scheduled)."""
    rows = session.execute(
        _CANCEL_IDS,
        {"ids": ids, "tenant": tenant, "from_states": CANCEL.bind_sources(from_states)},
    ).all()
    return [_job(row) for row in rows]


def requeue_ids(
    session: Session, ids: list[uuid.UUID], tenant: str | None, from_states: Collection[JobStatus]
) -> list[JobRecord]:
    """Back to queued, for those of the jobs still in `from_states` (failed, cancelled)."""
    rows = session.execute(
        _REQUEUE_IDS,
        {"ids": ids, "tenant": tenant, "from_states": REQUEUE.bind_sources(from_states)},
    ).all()
    return [_job(row) for row in rows]


def delete_ids(
    session: Session, ids: list[uuid.UUID], tenant: str | None, from_states: Collection[JobStatus]
) -> list[uuid.UUID]:
    """Delete those of the jobs still in `from_states` (never a running one)."""
    if JobStatus.PROCESSING in from_states:
        raise ValueError("a running job is never deleted: its worker holds it")
    rows = session.execute(
        _DELETE_IDS,
        {"ids": ids, "tenant": tenant, "from_states": sorted(s.value for s in from_states)},
    ).all()
    return [row.id for row in rows]


# --- the operations' rows -------------------------------------------------------------------


@dataclass(frozen=True)
class NewOperation:
    id: uuid.UUID
    owner: str
    key_id: uuid.UUID | None
    action: BulkAction
    query: BulkQuery
    total: int
    last_id: uuid.UUID | None
    request_id: str | None


def insert_operation(session: Session, new: NewOperation) -> BulkOperation:
    """Pending, or done at once when nothing matched."""
    state = BulkState.PENDING if new.last_id is not None else BulkState.DONE
    row = session.execute(
        insert(BulkRow)
        .values(
            id=new.id,
            owner=new.owner,
            key_id=new.key_id,
            action=new.action.value,
            query=query_to_json(new.query),
            state=state.value,
            total=new.total,
            last_id=new.last_id,
            request_id=new.request_id,
            finished_at=None if state is BulkState.PENDING else func.now(),
        )
        .returning(*_OPERATION)
    ).one()
    return _operation(row)


def get_operation(
    session: Session, operation_id: uuid.UUID, owner: str | None
) -> BulkOperation | None:
    """The operation, if `owner` (None: any) started it."""
    statement = select(*_OPERATION).where(BulkRow.id == operation_id)
    if owner is not None:
        statement = statement.where(BulkRow.owner == owner)
    row = session.execute(statement).first()
    return None if row is None else _operation(row)


def list_operations(
    session: Session,
    owner: str | None,
    state: BulkState | None,
    limit: int,
    before: uuid.UUID | None,
) -> list[BulkOperation]:
    """Newest first (ids are UUIDv7); `before` is the id of the last one seen."""
    statement = select(*_OPERATION)
    if owner is not None:
        statement = statement.where(BulkRow.owner == owner)
    if state is not None:
        statement = statement.where(BulkRow.state == state.value)
    if before is not None:
        statement = statement.where(BulkRow.id < before)
    rows = session.execute(statement.order_by(BulkRow.id.desc()).limit(limit))
    return [_operation(row) for row in rows]


def cancel_operation(
    session: Session, operation_id: uuid.UUID, owner: str | None
) -> BulkOperation | None:
    """Stop an operation that has not ended; None when it has (or is not `owner`'s). Waits
    for a batch in progress (it holds the row) to commit, so no batch runs after this."""
    statement = (
        update(BulkRow)
        .where(BulkRow.id == operation_id, BulkRow.state.in_(_ACTIVE))
        .values(state=BulkState.CANCELLED.value, updated_at=func.now(), finished_at=func.now())
        .returning(*_OPERATION)
    )
    if owner is not None:
        statement = statement.where(BulkRow.owner == owner)
    row = session.execute(statement).first()
    return None if row is None else _operation(row)


def active_ids(session: Session, limit: int) -> list[uuid.UUID]:
    """Operations not ended yet, oldest first."""
    return list(
        session.scalars(
            select(BulkRow.id)
            .where(BulkRow.state.in_(_ACTIVE))
            .order_by(BulkRow.created_at)
            .limit(limit)
        ).all()
    )


def lock_active(session: Session, operation_id: uuid.UUID) -> BulkOperation | None:
    """The operation, locked for this transaction's batch, if it has not ended."""
    row = session.execute(
        select(*_OPERATION)
        .where(BulkRow.id == operation_id, BulkRow.state.in_(_ACTIVE))
        .with_for_update()
    ).first()
    return None if row is None else _operation(row)


def advance(
    session: Session,
    operation_id: uuid.UUID,
    position: uuid.UUID | None,
    done: int,
    skipped: int,
    finished: bool,
) -> None:
    """Record a batch: its position, its counts, and whether the walk is over."""
    state = BulkState.DONE if finished else BulkState.RUNNING
    session.execute(
        update(BulkRow)
        .where(BulkRow.id == operation_id)
        .values(
            position=position,
            done=BulkRow.done + done,
            skipped=BulkRow.skipped + skipped,
            state=state.value,
            updated_at=func.now(),
            finished_at=func.now() if finished else None,
        )
    )


def delete_finished(session: Session, older_than_seconds: float, limit: int) -> int:
    """Delete up to `limit` operations that ended more than that long ago."""
    result = session.execute(
        text(
            """
            DELETE FROM bulk_operations WHERE id IN (
                SELECT id FROM bulk_operations
                 WHERE state IN ('done', 'cancelled')
                   AND finished_at < now() - make_interval(secs => :age)
                 ORDER BY finished_at LIMIT :limit
            )
            RETURNING id
            """
        ),
        {"age": older_than_seconds, "limit": limit},
    )
    return len(result.all())
