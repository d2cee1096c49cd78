"""The overview: every queue at a glance, refreshed in place by app.js."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from app.services import overview
from app.ui.params import TenantFilter
from app.ui.render import PageRoute, render
from app.ui.session import Reader, context_of

router = APIRouter(route_class=PageRoute)

# How often the page refreshes its table, in milliseconds.
REFRESH_MS = 5000


@router.get("/")
def overview_page(request: Request, session: Reader, tenant: TenantFilter = None) -> Response:
    """Per queue: jobs by status, the oldest waiting job's age, ids ready in Redis, paused or
    not, and what completed and failed in the last hour. An admin sees every tenant, or the
    one named; a producer its own."""
    queues = overview.overview(context_of(request), session.principal, tenant)
    return render(
        request,
        "overview.html",
        {"queues": queues, "tenant": tenant or "", "refresh_ms": REFRESH_MS},
        session,
    )
