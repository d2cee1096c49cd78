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
    """RPUSH ready ids onto their queue and priority list (FIFO with BLPOP), ZADD the rest."""
    pipe = client.pipeline(transaction=False)
    for job in jobs:
        if job.scheduled_for is None:
            pipe.rpush(keys.ready(job.queue, job.priority), job.job_id)
        else:
            pipe.zadd(keys.delayed, {job.job_id: job.scheduled_for.timestamp()})
    pipe.execute()


def ping(client: redis.Redis) -> None:
    client.ping()
