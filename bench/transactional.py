"""Transactional enqueue at a steady rate: from an application's commit to its job's start.

One application connection enqueues one job per transaction (app/enqueue.py, or the SQL
function jobfleet.enqueue()) and commits, at a steady rate; a fleet serves the queue and its
listener pushes each committed id to Redis. Each job's latency is its `started_at` (the
claim's Postgres clock) minus the moment just before COMMIT was sent (this process's clock,
the same machine's): the commit itself (its WAL flush), the notification, the listener's read
and push, a worker's wake-up and its claim. Measured from before the commit, never after, so
that no latency can come out negative when the job starts before the committing client is
scheduled to read the reply.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import Connection, create_engine, pool, text

from app.enqueue import enqueue
from app.runtime import freeze_startup_objects
from bench import readout
from bench.stack import Stack
from devtools.waiting import wait_until

QUEUE = "txn"
TENANT = "bench"


@dataclass(frozen=True)
class Committed:
    job_id: str
    before_commit: float  # time.time() just before COMMIT
    after_commit: float


def _python(connection: Connection) -> str:
    return str(enqueue(connection, TENANT, "noop", queue=QUEUE).job.id)


_SQL = text("SELECT job_id FROM jobfleet.enqueue(:tenant, 'noop', queue => :queue)")


def _sql(connection: Connection) -> str:
    return str(connection.execute(_SQL, {"tenant": TENANT, "queue": QUEUE}).scalar_one())


def _listening(stack: Stack) -> bool:
    # A transaction per look: pg_stat_activity holds still for the length of one.
    with stack.ctx.db.transaction() as session:
        return readout.listening(session)


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))
    return ordered[index] if ordered else 0.0


def measure(stack: Stack, jobs: int, rate: float, through_sql: bool) -> dict[str, float]:
    fleet = stack.start_fleet(2, 2, QUEUE)
    engine = create_engine(stack.settings.database_url, poolclass=pool.NullPool)
    insert = _sql if through_sql else _python
    try:
        with engine.connect() as connection:
            wait_until(lambda: _listening(stack), 60, what="the listener")
            # The fleet's first job must not wait for a spawn: one runs before the clock starts.
            with connection.begin():
                probe = insert(connection)
            wait_until(lambda: stack.count(QUEUE, "completed") == 1, 60, what="the fleet start")
            with stack.ctx.db.transaction() as session:
                readout.delete_job(session, uuid.UUID(probe))
            freeze_startup_objects()  # no full collection of the bench may stall the pacing
            committed = _paced(connection, insert, jobs, rate)
        wait_until(lambda: not stack.unfinished(QUEUE), 120, what="the enqueued jobs")
    finally:
        engine.dispose()
        stack.stop(fleet)
    with stack.ctx.db.transaction() as session:
        started = readout.started_at(session, QUEUE)
    if len(started) != jobs or any(c.job_id not in started for c in committed):
        raise RuntimeError(f"{len(started)} of {jobs} transactional jobs started")
    waits = [(started[c.job_id] - c.before_commit) * 1000 for c in committed]
    commits = [(c.after_commit - c.before_commit) * 1000 for c in committed]
    return {
        **{f"p{q}_ms": _percentile(waits, q) for q in (50, 95, 99)},
        "max_ms": max(waits),
        "commit_p50_ms": _percentile(commits, 50),
    }


def _paced(
    connection: Connection, insert: Callable[[Connection], str], jobs: int, rate: float
) -> list[Committed]:
    """One job per transaction, the transactions `1 / rate` apart (a late one does not push
    the schedule back)."""
    committed = []
    began = time.perf_counter()
    for index in range(jobs):
        delay = began + index / rate - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        transaction = connection.begin()
        job_id = insert(connection)
        before = time.time()
        transaction.commit()
        committed.append(Committed(job_id, before, time.time()))
    return committed
