"""The delayed set and the atomic move of due ids into their ready lists."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

import redis

from app.dispatch import scripts
from app.dispatch.keys import Keys
from app.dispatch.ready import Place


def move_to_ready(client: redis.Redis, keys: Keys, moves: Iterable[tuple[str, Place]]) -> int:
    """Move each id out of the delayed set onto the tail of its ready list (one script)."""
    args: list[str] = []
    for job_id, place in moves:
        args += [
            job_id,
            keys.ready(place.queue, place.priority, place.tenant),
            keys.ring(place.queue, place.priority),
            keys.bell(place.queue),
            place.tenant,
        ]
    if not args:
        return 0
    return int(scripts.MOVE(client, [keys.delayed], args))


def due_ids(client: redis.Redis, keys: Keys, now: float, limit: int) -> list[str]:
    raw = client.zrangebyscore(keys.delayed, "-inf", now, start=0, num=limit)
    return [r.decode() if isinstance(r, bytes) else str(r) for r in raw]


def forget(client: redis.Redis, keys: Keys, job_ids: list[str]) -> None:
    if job_ids:
        client.zrem(keys.delayed, *job_ids)


def schedule(client: redis.Redis, keys: Keys, items: Iterable[tuple[str, datetime]]) -> None:
    mapping = {job_id: run_at.timestamp() for job_id, run_at in items}
    if mapping:
        client.zadd(keys.delayed, mapping)


def size(client: redis.Redis, keys: Keys) -> int:
    """How many ids the delayed set holds."""
    return int(client.zcard(keys.delayed))
