"""What the reconciler reads and writes in Redis: the epoch, list heads, and re-pushes."""

from __future__ import annotations

import redis

from app.dispatch.keys import Keys


def epoch_present(client: redis.Redis, keys: Keys) -> bool:
    return bool(client.exists(keys.epoch))


def write_epoch(client: redis.Redis, keys: Keys, value: str) -> None:
    client.set(keys.epoch, value)


def head(client: redis.Redis, list_key: str, count: int) -> list[str]:
    """The oldest ids of a ready list (the next to be popped)."""
    return [
        r.decode() if isinstance(r, bytes) else str(r)
        for r in client.lrange(list_key, 0, count - 1)
    ]


def push_back_many(client: redis.Redis, pushes: list[tuple[str, str]]) -> None:
    """RPUSH each (list, id) in order, pipelined."""
    pipe = client.pipeline(transaction=False)
    for list_key, job_id in pushes:
        pipe.rpush(list_key, job_id)
    pipe.execute()
