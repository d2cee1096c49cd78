"""GET /metrics: Prometheus text for this API (all its worker processes) and the scrape-time
queue and fleet gauges."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.security import HTTPAuthorizationCredentials
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from app.api.deps import ContextDep, bearer, caller
from app.metrics import metrics
from app.services.auth import Scope
from app.services.gauges import FleetGauges

router = APIRouter(tags=["health"])

_admin = caller(Scope.ADMIN, "admin")


@router.get("/metrics", response_class=Response)
async def prometheus_metrics(
    request: Request,
    ctx: ContextDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> Response:
    """Prometheus text; needs an admin key unless METRICS_PUBLIC is true."""
    if not ctx.settings.metrics_public:
        await _admin(request, ctx, credentials)
    body, content_type = await run_in_threadpool(metrics().exposition, [FleetGauges(ctx)])
    return Response(body, media_type=content_type)
