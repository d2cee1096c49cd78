"""Audit rows: insert one, read them newest first, and retention's delete of old ones. Nothing
here updates a row; the table's trigger would refuse it (migration 0005)."""

from __future__ import annotations

import uuid
from typing import Any

import orjson
from sqlalchemy import Row, delete, insert, select, text
from sqlalchemy.orm import Session

from app.domain.audit import Actor, AuditAction, AuditEvent, AuditFilter
from app.store.models import AuditEvent as AuditRow

_EVENT = (
    AuditRow.id,
    AuditRow.at,
    AuditRow.actor,
    AuditRow.key_id,
    AuditRow.tenant,
    AuditRow.action,
    AuditRow.target,
    AuditRow.request_id,
)


def _event(row: Row[Any]) -> AuditEvent:
    event_id, at, actor, key_id, tenant, action, target, request_id = row
    return AuditEvent(
        event_id, at, Actor(actor), key_id, tenant, AuditAction(action), target, request_id
    )


def insert_event(
    session: Session,
    actor: Actor,
    key_id: uuid.UUID | None,
    tenant: str | None,
    action: AuditAction,
    target: dict[str, Any],
    request_id: str | None,
) -> AuditEvent:
    row = session.execute(
        insert(AuditRow)
        .values(
            actor=actor.value,
            key_id=key_id,
            tenant=tenant,
            action=action.value,
            # Through orjson, as the jobs' payloads: uuids and datetimes become strings.
            target=orjson.loads(orjson.dumps(target)),
            request_id=request_id,
        )
        .returning(*_EVENT)
    ).one()
    return _event(row)


def list_events(
    session: Session, where: AuditFilter, limit: int, before: int | None
) -> list[AuditEvent]:
    """Newest first; `before` (the id of the last event seen) pages by keyset."""
    statement = select(*_EVENT)
    if where.action is not None:
        statement = statement.where(AuditRow.action == where.action.value)
    if where.tenant is not None:
        statement = statement.where(AuditRow.tenant == where.tenant)
    if where.key_id is not None:
        statement = statement.where(AuditRow.key_id == where.key_id)
    if where.since is not None:
        statement = statement.where(AuditRow.at >= where.since)
    if before is not None:
        statement = statement.where(AuditRow.id < before)
    rows = session.execute(statement.order_by(AuditRow.id.desc()).limit(limit))
    return [_event(row) for row in rows]


def delete_older_than(session: Session, older_than_seconds: float, limit: int) -> int:
    """Delete up to `limit` of the oldest events recorded more than that long ago."""
    oldest = (
        select(AuditRow.id)
        .where(
            AuditRow.at
            < text("now() - make_interval(secs => :age)").bindparams(age=older_than_seconds)
        )
        .order_by(AuditRow.at)
        .limit(limit)
        .scalar_subquery()
    )
    result = session.execute(delete(AuditRow).where(AuditRow.id.in_(oldest)).returning(AuditRow.id))
    return len(result.all())
