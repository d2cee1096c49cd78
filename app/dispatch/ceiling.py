"""The Redis side of the benchmark's ceiling: RPUSH + BLPOP pairs per second, one client."""

from __future__ import annotations

import time

import redis


def push_pop_rate(redis_url: str, key: str, seconds: float) -> float:
    client = redis.Redis.from_url(redis_url)
    try:
        pairs = 0
        deadline = time.perf_counter() + seconds
        started = time.perf_counter()
        while time.perf_counter() < deadline:
            client.rpush(key, b"x")
            client.blpop([key], timeout=1)
            pairs += 1
        return pairs / (time.perf_counter() - started)
    finally:
        client.delete(key)
        client.close()
