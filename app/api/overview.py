"""The overview: every queue at a glance, as the key's tenant (or an admin) sees it."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from app.api.bodies import JsonRoute
from app.api.deps import ContextDep, Reader
from app.domain.filters import TenantName
from app.domain.overview import QueueOverview
from app.services import overview

router = APIRouter(tags=["overview"], route_class=JsonRoute)


@router.get("/overview")
def get_overview(
    ctx: ContextDep,
    principal: Reader,
    tenant: Annotated[
        TenantName | None,
        Query(
            description="Admin keys: this tenant's jobs only. A producer key may name only its own."
        ),
    ] = None,
) -> list[QueueOverview]:
    """Per queue: jobs in play and failed, the oldest waiting job's age, ids ready in Redis,
    the paused flag, and what completed and failed in the last hour."""
    return overview.overview(ctx, principal, tenant)
