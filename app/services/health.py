"""Readiness: can this process reach Postgres and Redis right now?"""

from __future__ import annotations

import logging

from app.dispatch import push
from app.services.context import Context
from app.store import admin

log = logging.getLogger(__name__)


def check_dependencies(ctx: Context) -> dict[str, str]:
    """Each dependency mapped to "ok" or the reason it failed."""
    checks: dict[str, str] = {}
    try:
        with ctx.db.transaction() as session:
            admin.ping(session)
        checks["postgres"] = "ok"
    except Exception as exc:  # noqa: BLE001 - any failure means not ready; the caller sees why
        checks["postgres"] = f"unavailable: {type(exc).__name__}"
    try:
        push.ping(ctx.redis.client)
        checks["redis"] = "ok"
    except Exception as exc:  # noqa: BLE001
        checks["redis"] = f"unavailable: {type(exc).__name__}"
    return checks
