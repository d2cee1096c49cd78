"""The delayed set and the atomic move of due ids into their ready lists."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

import redis

from app.dispatch.keys import Keys

# ZREM and RPUSH together, per id: a promoter dying half-way leaves no id in both places or
# in neither (Postgres already says queued, so the reconciler would still find it).
_MOVE = """
for i = 1, #ARGV, 2 do
    redis.call('zrem', KEYS[1], ARGV[i])
    redis.call('rpush', ARGV[i + 1], ARGV[i])
end
return #ARGV / 2
"""


def move_to_ready(client: redis.Redis, keys: Keys, moves: Iterable[tuple[str, str]]) -> int:
    """Move each (job id, ready list) pair out of the delayed set onto the list's tail."""
    args: list[str] = []
    for job_id, list_key in moves:
        args += [job_id, list_key]
    if not args:
        return 0
    return int(client.eval(_MOVE, 1, keys.delayed, *args))


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
