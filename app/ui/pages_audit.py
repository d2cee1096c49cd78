"""The audit log, for admins: who changed what, when, under which request; newest first, with
the filters of GET /audit in the URL and keyset pages."""

from __future__ import annotations

import json
import uuid
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Query, Request
from starlette.responses import Response

from app.domain.audit import AuditAction, AuditFilter
from app.domain.schemas import Cursor
from app.services import audit
from app.ui.params import Blankable, TenantFilter, UtcTimeFilter
from app.ui.render import PageRoute, render
from app.ui.session import Admin, context_of

router = APIRouter(route_class=PageRoute)

AUDIT = "/ui/audit"
PAGE_SIZE = 50
# A bulk replay's target may list many job ids: the table shows the start of it.
TARGET_CHARS = 300


def target_text(target: dict[str, Any]) -> str:
    text = json.dumps(target, ensure_ascii=False, sort_keys=True, default=str)
    return text if len(text) <= TARGET_CHARS else text[: TARGET_CHARS - 1] + "…"


@router.get("/audit")
def audit_page(
    request: Request,
    session: Admin,
    action: Annotated[AuditAction | None, Blankable] = None,
    tenant: TenantFilter = None,
    key_id: Annotated[uuid.UUID | None, Blankable] = None,
    since: UtcTimeFilter = None,
    cursor: Annotated[Cursor | None, Blankable, Query()] = None,
) -> Response:
    filters = AuditFilter(action=action, tenant=tenant, key_id=key_id, since=since)
    page = audit.list_events(context_of(request), session.principal, filters, PAGE_SIZE, cursor)
    query = {
        name: value
        for name, value in (
            ("action", action.value if action else ""),
            ("tenant", tenant or ""),
            ("key_id", str(key_id) if key_id else ""),
            ("since", since.isoformat() if since else ""),
        )
        if value
    }
    first_url = AUDIT + (f"?{urlencode(query)}" if query else "")
    next_url = (
        f"{AUDIT}?{urlencode({**query, 'cursor': page.next_cursor})}" if page.next_cursor else ""
    )
    return render(
        request,
        "audit.html",
        {
            "events": [{"event": e, "target": target_text(e.target)} for e in page.items],
            "actions": [a.value for a in AuditAction],
            "filters": {
                "action": action.value if action else "",
                "tenant": tenant or "",
                "key_id": str(key_id) if key_id else "",
                "since": since.isoformat() if since else "",
            },
            "first_url": first_url,
            "next_url": next_url,
            "here_url": first_url if cursor is None else "",
        },
        session,
    )
