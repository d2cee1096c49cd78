"""Announcing committed jobs to Redis. Callers push only after their Postgres commit."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

import redis

from app.dispatch.keys import Keys


@dataclass(frozen=True)
class Announcement:
    """What Redis needs to know of a waiting job: where its id goes."""

    job_id: str
    queue: str
    priority: int
    scheduled_for: datetime | None  # None: ready now


def announce(client: redis.Redis, keys: Keys, jobs: Iterable[Announcement]) -> None:
    """RPUSH ready ids onto their queue and priority list (FIFO with BLPOP), ZADD the rest:
    one RPUSH per list and one ZADD, in one round trip, whatever the number of jobs."""
    ready: dict[str, list[str]] = {}
    delayed: dict[str, float] = {}
    for job in jobs:
        if job.scheduled_for is None:
            ready.setdefault(keys.ready(job.queue, job.priority), []).append(job.job_id)
        else:
            delayed[job.job_id] = job.scheduled_for.timestamp()
    pipe = client.pipeline(transaction=False)
    for list_key, job_ids in ready.items():
        pipe.rpush(list_key, *job_ids)
    if delayed:
        pipe.zadd(keys.delayed, delayed)
    pipe.execute()


def ping(client: redis.Redis) -> None:
    client.ping()
