"""The hardware ceiling the benchmark reads every figure against: how many single-row
INSERT + COMMIT round trips one client gets from this Postgres, and how many RPUSH + BLPOP
pairs from this Redis."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable

import redis
from sqlalchemy import create_engine, text


def _rate(step: Callable[[], object], seconds: float) -> float:
    """How many times a second `step` runs, back to back, over `seconds`."""
    steps = 0
    started = time.perf_counter()
    deadline = started + seconds
    while time.perf_counter() < deadline:
        step()
        steps += 1
    return steps / (time.perf_counter() - started)


def insert_commit_rate(database_url: str, seconds: float) -> float:
    """Rows per second, one client, one row per transaction."""
    engine = create_engine(database_url, pool_size=1)
    try:
        with engine.connect() as connection:
            connection.execute(text("CREATE TEMP TABLE ceiling (id bigint, at timestamptz)"))
            connection.commit()
            numbers = itertools.count()

            def insert_commit() -> None:
                connection.execute(
                    text("INSERT INTO ceiling VALUES (:n, now())"), {"n": next(numbers)}
                )
                connection.commit()

            return _rate(insert_commit, seconds)
    finally:
        engine.dispose()


def push_pop_rate(redis_url: str, key: str, seconds: float) -> float:
    """RPUSH + BLPOP pairs per second, one client."""
    client = redis.Redis.from_url(redis_url)
    try:

        def push_pop() -> None:
            client.rpush(key, b"x")
            client.blpop([key], timeout=1)

        return _rate(push_pop, seconds)
    finally:
        client.delete(key)
        client.close()
