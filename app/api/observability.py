"""GET /metrics: Prometheus text for this API (all its worker processes) and the scrape-time
queue and fleet gauges. The same text is served without a key on the API's metrics port
(app/api/metrics_port.py)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends
from fastapi.security import HTTPAuthorizationCredentials
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from app.api.deps import ContextDep, bearer, caller
from app.metrics import metrics
from app.services.auth import Scope
from app.services.gauges import FleetGauges

router = APIRouter(tags=["health"])

# Admin keys pass every scope check; a `metrics` key passes this one only.
_reader = caller(Scope.METRICS, "admin")


@router.get("/metrics", response_class=Response)
async def prometheus_metrics(
    ctx: ContextDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> Response:
    """Prometheus text; needs a key with the `metrics` or `admin` scope unless
    METRICS_PUBLIC is true."""
    if not ctx.settings.metrics_public:
        await _reader(ctx, credentials)
    body, content_type = await run_in_threadpool(metrics().exposition, [FleetGauges(ctx)])
    return Response(body, media_type=content_type)
