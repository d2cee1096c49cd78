"""Rate limits per API key and action, counted in Redis so that every API replica shares
them (app/dispatch/ratelimit.py)."""

from __future__ import annotations

from app.domain.principal import Principal
from app.services.context import Context


def prepare(ctx: Context) -> None:
    """Build the limiter now (it connects on first use), so that a malformed RATE_LIMIT_*
    setting stops the API at its start, not at its first request."""
    ctx.rate_limits  # noqa: B018 - built on first access


def enabled(ctx: Context) -> bool:
    return ctx.settings.rate_limit_enabled


def hit(ctx: Context, principal: Principal, action: str) -> None:
    """Count one request of `action` by the caller's key; RateLimited when over the limit.
    Blocking (a Redis round trip): call it from a thread, not from the event loop."""
    ctx.rate_limits.hit(action, str(principal.key_id))


async def ahit(ctx: Context, principal: Principal, action: str) -> None:
    """`hit` on the event loop."""
    await ctx.rate_limits.ahit(action, str(principal.key_id))
