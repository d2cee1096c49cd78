"""The audit log, for admins: who changed what, when, under which request."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query

from app.api.bodies import JsonRoute
from app.api.deps import Admin, ContextDep
from app.domain.audit import AuditAction, AuditFilter
from app.domain.filters import TenantName
from app.domain.schemas import Cursor
from app.domain.values import UtcDatetime
from app.services import audit
from app.services.audit import AuditPage

router = APIRouter(tags=["audit"], route_class=JsonRoute)


@router.get("/audit")
def list_audit_events(
    ctx: ContextDep,
    principal: Admin,
    action: AuditAction | None = None,
    tenant: Annotated[TenantName | None, Query(description="The acting key's tenant")] = None,
    key_id: Annotated[uuid.UUID | None, Query(description="The acting key's id")] = None,
    since: Annotated[
        UtcDatetime | None,
        Query(description="Events at or after this time: ISO 8601 with a UTC offset"),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=200, description="Events per page")] = 50,
    cursor: Annotated[
        Cursor | None,
        Query(description="The `next_cursor` of the previous page, with the same filters"),
    ] = None,
) -> AuditPage:
    """Every change made by an API key or the command line (`actor` `cli`), newest first:
    job cancels, retries, deletes and replays, bulk operations, queue pauses and resumes, fleet
    sizes, keys created and revoked."""
    filters = AuditFilter(action=action, tenant=tenant, key_id=key_id, since=since)
    return audit.list_events(ctx, principal, filters, limit, cursor)
