"""GET /metrics: Prometheus text for this API (all its worker processes) and the scrape-time
queue and fleet gauges."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.security import HTTPAuthorizationCredentials
from starlette.responses import Response

from app.api.deps import ContextDep, _bearer, caller
from app.metrics import metrics
from app.services.auth import Scope
from app.services.gauges import FleetGauges

router = APIRouter(tags=["health"])

_admin = caller(Scope.ADMIN, "admin")


@router.get("/metrics", response_class=Response)
def prometheus_metrics(
    request: Request,
    ctx: ContextDep,
    credentials: HTTPAuthorizationCredentials | None = Depends(_bearer),  # noqa: B008
) -> Response:
    if not ctx.settings.metrics_public:
        from app.api.deps import _principal

        _admin(request, _principal(ctx, credentials))
    body, content_type = metrics().exposition([FleetGauges(ctx)])
    return Response(body, media_type=content_type)
