"""Liveness and readiness; no key needed."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from starlette.responses import Response

from app.api.deps import ContextDep
from app.api.problems import problem_response
from app.services.health import check_dependencies

router = APIRouter(tags=["health"])


@router.get("/health")
async def health() -> dict[str, str]:
    """The process is up and serving requests."""
    return {"status": "ok"}


@router.get("/ready", responses={503: {"description": "Postgres or Redis unavailable"}})
def ready(ctx: ContextDep) -> Any:
    """Postgres and Redis both answer; 503 names the one that does not."""
    checks = check_dependencies(ctx)
    failed = [name for name, state in checks.items() if state != "ok"]
    if failed:
        return problem_response(
            503,
            "not-ready",
            "Not ready",
            f"unavailable: {', '.join(failed)}",
            checks=checks,
        )
    return {"status": "ready", "checks": checks}


__all__ = ["Response", "router"]
