"""Announcing committed jobs to Redis. Callers push only after their Postgres commit."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

import redis

from app.dispatch import ready
from app.dispatch.keys import Keys
from app.dispatch.ready import Place


@dataclass(frozen=True)
class Announcement:
    """What Redis needs to know of a waiting job: where its id goes."""

    job_id: str
    queue: str
    priority: int
    tenant: str
    scheduled_for: datetime | None  # None: ready now


def announce(client: redis.Redis, keys: Keys, jobs: Iterable[Announcement]) -> None:
    """Ready ids onto the tail of their lists (FIFO), the rest into the delayed set: one
    script call per list and one ZADD, in one round trip, whatever the number of jobs."""
    lists: dict[Place, list[str]] = {}
    delayed: dict[str, float] = {}
    for job in jobs:
        if job.scheduled_for is None:
            lists.setdefault(Place(job.queue, job.priority, job.tenant), []).append(job.job_id)
        else:
            delayed[job.job_id] = job.scheduled_for.timestamp()
    pipe = client.pipeline(transaction=False)
    for place, job_ids in lists.items():
        ready.push(pipe, keys, place, job_ids)
    if delayed:
        pipe.zadd(keys.delayed, delayed)
    pipe.execute()


def ping(client: redis.Redis) -> None:
    client.ping()
