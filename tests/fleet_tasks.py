"""Tasks the fleet tests load through TASK_MODULES (they run inside worker processes)."""

from __future__ import annotations

import os
import time
from typing import Any

import redis

from app.workers.registry import JobContext, task

_client: redis.Redis | None = None


def _redis() -> redis.Redis:
    global _client
    if _client is None:
        # The fault tests flush the dispatching Redis; the count must live elsewhere.
        _client = redis.Redis.from_url(os.environ.get("COUNTER_REDIS_URL", os.environ["REDIS_URL"]))
    return _client


def side_effect_key(prefix: str | None = None) -> str:
    """Where `count` tallies its runs: under the key prefix of the fleet's settings."""
    return f"{prefix or os.environ['KEY_PREFIX']}:test:runs"


@task("count")
def count(payload: Any, job: JobContext) -> dict[str, Any]:
    """Counts its runs per job id in Redis (a side effect that shows a job ran twice), then
    waits `seconds` (`first_run_seconds` on its first run) unless cancelled."""
    runs = _redis().hincrby(side_effect_key(), str(job.id), 1)
    options = payload if isinstance(payload, dict) else {}
    seconds = float(options.get("seconds", 0))
    if runs == 1:
        seconds = float(options.get("first_run_seconds", seconds))
    if seconds:
        job.cancel_event.wait(seconds)
    return {"runs": runs}


class FirstRunFailed(Exception):
    """`fails_once` fails the first run of each job on purpose."""


@task("fails_once")
def fails_once(payload: Any, job: JobContext) -> dict[str, Any]:
    """Fails the first run of each job, whatever its attempt number, and succeeds after: a
    dead-lettered job that a replay (a fresh retry budget, attempts from 0) brings back runs
    to completion."""
    runs = _redis().hincrby(side_effect_key(), str(job.id), 1)
    if runs == 1:
        raise FirstRunFailed("first run fails")
    return {"runs": runs}


@task("stubborn")
def stubborn(payload: Any) -> None:
    """Blocks in one C call, so the soft timeout cannot reach it: only a kill stops it."""
    time.sleep(float(payload.get("seconds", 30)))


@task("not_json")
def not_json(payload: Any) -> Any:
    return {1, 2, 3}
