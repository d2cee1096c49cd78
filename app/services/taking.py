"""Ready ids for the native fleet's job loops: take them, wait for them, hand them back.

A job loop takes ids from the ready lists of the queues it serves (highest priority first,
tenants in turn), claims them through `execution.claim`, and hands back the ids it took but
will not claim (it is stopping, or Postgres is away) so that they keep their place.
"""

from __future__ import annotations

from app.dispatch import ready
from app.dispatch.ready import Taken
from app.services.context import Context

# The records a job loop handles: ids taken from one list, and the jobs it claimed.
__all__ = ["Taken", "hand_back", "take", "wait", "wake"]


def take(ctx: Context, queues: list[str], count: int) -> Taken | None:
    """Up to `count` ids waiting in one list of `queues`, without waiting; None if none."""
    return ready.take_any(ctx.redis.client, ctx.keys, queues, count)


def wait(ctx: Context, queues: list[str], timeout: float, worker_id: str) -> bool:
    """Block until a push to one of `queues`, a `wake` of `worker_id`, or `timeout` seconds;
    False when the time ran out."""
    return ready.wait(ctx.redis.client, ctx.keys, queues, timeout, worker_id)


def wake(ctx: Context, worker_id: str, loops: int) -> None:
    """End at once the waits of the job loops of `worker_id`, which is stopping."""
    ready.wake(ctx.redis.client, ctx.keys, worker_id, loops)


def hand_back(ctx: Context, taken: Taken) -> None:
    """Ids taken and not claimed: back to the head of their list, in their order."""
    ready.push(ctx.redis.client, ctx.keys, taken.place, taken.job_ids, front=True)
