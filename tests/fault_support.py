"""Shared pieces of the fault-injection tests (tests/test_faults_*.py): fast settings, a
primed Redis, a backlog of jobs, and the exactly-once check every fault test ends with.

Each such test runs a fleet over at least 1,000 jobs, breaks something in the middle of the run
and then checks that every job completed exactly once. Servers that a test stops, restarts or
flushes are private ones (devtools) of the test's own; the shared Postgres and Redis are only
ever used through the tests' database and key prefix.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import redis
from sqlalchemy import text

from app.dispatch import reconcile
from app.services.context import Context
from app.services.maintenance import Reconciler
from app.settings import Settings
from devtools.processes import proc_fields
from tests.fleet_support import statuses, submit
from tests.helpers import LiveFleet, wait_until

JOBS = 1000
# Fast heartbeats, leases (= heartbeat TTL), retries and duties, so that every fault heals
# within a few seconds.
FAST: dict[str, Any] = {
    "heartbeat_interval_seconds": 0.5,
    "heartbeat_ttl_seconds": 3,
    "retry_base": 1.5,
    "retry_cap": 0.5,
    "sweep_after_seconds": 1.0,
    "reconcile_interval_seconds": 0.2,
    "recovery_interval_seconds": 0.2,
    "promote_interval_seconds": 0.1,
}
RUN_TIMEOUT = 60.0


def fast(settings: Settings, **update: Any) -> Settings:
    return settings.model_copy(update={**FAST, **update})


def parent_pid(pid: int) -> int:
    fields = proc_fields(pid)
    assert fields is not None, f"process {pid} is gone"
    return int(fields[1])


def prime(ctx: Context) -> None:
    """What a fleet's reconciler does first on a fresh Redis: write the epoch key (a rebuild of
    nothing). Done before jobs are submitted, so that a fleet started later does not rebuild
    (and push every queued id a second time) and the backlog it finds is the submitter's."""
    assert reconcile.epoch_present(ctx.redis.client, ctx.keys) is False
    Reconciler(ctx).run_once(time.time())
    assert reconcile.epoch_present(ctx.redis.client, ctx.keys)


def submit_many(ctx: Context, count: int, seconds: float, **payload: Any) -> list[str]:
    return [submit(ctx, payload={"seconds": seconds, **payload}) for _ in range(count)]


def completed(ctx: Context) -> int:
    return statuses(ctx).get("completed", 0)


@dataclass(frozen=True)
class JobRecord:
    status: str
    attempts: int
    outcomes: list[str]
    workers: list[str]
    result: Any
    runs: int


def assert_completed_exactly_once(
    ctx: Context, expected: set[str], counter: redis.Redis, key: str
) -> dict[str, JobRecord]:
    """Every job is one of `expected` and completed, with exactly one `completed` attempt,
    one attempt row per started attempt, nothing but completed/lost/timeout outcomes, and a
    side-effect count between 1 and its number of attempts (exactly 1 when no attempt was
    lost or timed out). Returns what it read, by job id."""
    with ctx.db.transaction() as session:
        rows = session.execute(
            text(
                """
                SELECT j.id::text AS id, j.status, j.attempts, j.result,
                       coalesce(array_agg(a.outcome::text ORDER BY a.attempt, a.id)
                                FILTER (WHERE a.id IS NOT NULL), '{}') AS outcomes,
                       coalesce(array_agg(coalesce(a.worker_id, '')::text
                                          ORDER BY a.attempt, a.id)
                                FILTER (WHERE a.id IS NOT NULL), '{}') AS workers
                  FROM jobs j LEFT JOIN job_attempts a ON a.job_id = j.id
                 GROUP BY j.id
                """
            )
        ).all()
    runs = {k.decode(): int(v) for k, v in counter.hgetall(key).items()}
    records = {
        r.id: JobRecord(
            r.status, r.attempts, list(r.outcomes), list(r.workers), r.result, runs.get(r.id, 0)
        )
        for r in rows
    }
    assert set(records) == expected, (
        f"{len(set(records) - expected)} unexpected and {len(expected - set(records))} missing jobs"
    )
    assert set(runs) <= expected, "side effects of jobs that do not exist"
    problems = []
    for job_id, rec in records.items():
        why = []
        if rec.status != "completed":
            why.append(f"status {rec.status}")
        if rec.outcomes.count("completed") != 1:
            why.append("completed attempts != 1")
        if not set(rec.outcomes) <= {"completed", "lost", "timeout"}:
            why.append("unexpected outcome")
        if rec.attempts != len(rec.outcomes):
            why.append("attempts counter != attempt rows")
        if not 1 <= rec.runs <= len(rec.outcomes):
            why.append("side effects outside 1..attempts")
        if not {"lost", "timeout"} & set(rec.outcomes) and rec.runs != 1:
            why.append("ran more than once without a lost attempt")
        if why:
            problems.append(f"{job_id}: {', '.join(why)}: {rec}")
    assert not problems, f"{len(problems)} bad jobs, first ones:\n" + "\n".join(problems[:10])
    return records


def run_to_the_end(
    ctx: Context, fleet: LiveFleet, expected: set[str], rows: Context | None = None
) -> dict[str, JobRecord]:
    """Wait until the `expected` jobs (in `rows`' database, default `ctx`'s) completed, check
    that the fault did not take the fleet's manager down, and check each job completed exactly
    once (its side effects counted in `ctx`'s Redis under the fleet's key prefix)."""
    rows = rows or ctx
    wait_until(lambda: completed(rows) == len(expected), timeout=RUN_TIMEOUT, interval=0.2)
    assert fleet.process.poll() is None, "the fleet's manager died"
    counter = f"{rows.settings.key_prefix}:test:runs"  # the `count` task's (tests/fleet_tasks.py)
    return assert_completed_exactly_once(rows, expected, ctx.redis.client, counter)
