"""The audit log: every change an API key or the command line makes to jobs, queues, the fleet
or the keys, recorded in Postgres with who, what, when and the request id.

`record` takes the session of the change it records: the event commits with the change or not
at all. The services that change Redis instead (a queue's pause, a host's size) record first,
commit, then make the change; an event whose change then failed in Redis stays, so that the
log holds every change made and, at worst, an attempt that the caller saw fail (a 503).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel
from sqlalchemy.orm import Session

from app.domain.audit import Actor, AuditAction, AuditEvent, AuditFilter
from app.domain.cursor import decode_position, encode_position
from app.domain.principal import Principal
from app.logging import context_field
from app.services.context import Context
from app.store import audit as audit_store

BIGINT_MAX = 2**63 - 1


def record(
    session: Session,
    principal: Principal | None,
    action: AuditAction,
    target: dict[str, Any],
    request_id: str | None = None,
) -> AuditEvent:
    """Write one event in `session`'s transaction. `principal` None: the command line.
    `request_id` None: the request id of the logging context (the request at hand)."""
    return audit_store.insert_event(
        session,
        Actor.CLI if principal is None else Actor.KEY,
        None if principal is None else principal.key_id,
        None if principal is None else principal.tenant,
        action,
        target,
        request_id or context_field("request_id"),
    )


def job_target(job_ids: list[uuid.UUID], tenant: str | None, **more: Any) -> dict[str, Any]:
    """The target of a change to jobs: their ids and their tenant (the one they belong to,
    which an admin's key does not share)."""
    return {"job_ids": [str(job_id) for job_id in job_ids], "tenant": tenant, **more}


class AuditEventOut(BaseModel):
    id: int
    at: datetime
    actor: Actor
    key_id: uuid.UUID | None
    tenant: str | None
    action: AuditAction
    target: dict[str, Any]
    request_id: str | None


class AuditPage(BaseModel):
    items: list[AuditEventOut]
    limit: int
    next_cursor: str | None = None


def _event_id(raw: str) -> int:
    event_id = int(raw)
    if not 0 < event_id <= BIGINT_MAX:
        raise ValueError("out of range")
    return event_id


def list_events(
    ctx: Context, principal: Principal, filters: AuditFilter, limit: int, cursor: str | None
) -> AuditPage:
    """Newest first. An admin reads every event (or one tenant's); any other key only the
    events of its own tenant's keys, whatever tenant it asks for."""
    if not principal.is_admin:
        filters = AuditFilter(filters.action, principal.tenant, filters.key_id, filters.since)
    before = decode_position(cursor, _event_id) if cursor else None
    with ctx.db.transaction() as session:
        events = audit_store.list_events(session, filters, limit, before)
    items = [AuditEventOut.model_validate(event, from_attributes=True) for event in events]
    next_cursor = encode_position(str(items[-1].id)) if len(items) == limit else None
    return AuditPage(items=items, limit=limit, next_cursor=next_cursor)
