"""The fleet's own state in Redis, as its processes see it: their heartbeats, the queues
operators paused, the process count operators want on a host. (The operators' side of the
same state, listing and setting it, is `app/services/fleet.py`.)"""

from __future__ import annotations

from typing import Any

from app.dispatch import fleet
from app.services.context import Context


def beat(ctx: Context, worker_id: str, state: dict[str, Any], ttl: int) -> None:
    """Say that `worker_id` is alive, and what it does, for the next `ttl` seconds."""
    fleet.write_heartbeat(ctx.redis.client, ctx.keys, worker_id, state, ttl)


def sign_off(ctx: Context, worker_id: str) -> None:
    """Remove a heartbeat at once rather than let it expire: the process is gone."""
    fleet.remove_heartbeat(ctx.redis.client, ctx.keys, worker_id)


def paused_queues(ctx: Context) -> set[str]:
    return fleet.paused_queues(ctx.redis.client, ctx.keys)


def desired_size(ctx: Context, host: str) -> int | None:
    """The process count operators set for `host`; None when they set none."""
    return fleet.desired_size(ctx.redis.client, ctx.keys, host)
