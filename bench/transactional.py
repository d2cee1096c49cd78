"""Transactional enqueue at a steady rate: from an application's commit to its job's start.

One application connection enqueues one job per transaction (app/enqueue.py, or the SQL
function jobfleet.enqueue()) and commits, at a steady rate; a fleet serves the queue and its
listener pushes each committed id to Redis. Each job's latency is its `started_at` (the
claim's Postgres clock) minus the moment just before COMMIT was sent (this process's clock,
the same machine's): the commit itself (its WAL flush), the notification, the listener's read
and push, a worker's wake-up and its claim. Measured from before the commit, never after, so
that no latency can come out negative when the job starts before the committing client is
scheduled to read the reply.

Beside it, how many such commits Postgres makes a second from 8 concurrent clients, against
the same inserts without a notification.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import psycopg2  # type: ignore[import-untyped]
from sqlalchemy import Connection, create_engine, pool, text

from app.enqueue import enqueue
from app.runtime import freeze_startup_objects
from app.store.listening import libpq_url
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


# -- how many transactional enqueues Postgres commits a second -------------------------------

RATE_CLIENTS = 8

_STEPS = {
    # A plain row and its commit: commits of concurrent clients share WAL flushes.
    "insert": ["INSERT INTO rate_rows (at) VALUES (now())"],
    # The same with a notification: such commits take turns at Postgres's notification lock.
    "insert_notify": [
        "INSERT INTO rate_rows (at) VALUES (now())",
        "SELECT pg_notify('jobfleet_rate', 'x')",
    ],
    # A whole transactional enqueue, validation and fingerprint included.
    "enqueue_sql": [f"SELECT jobfleet.enqueue('{TENANT}', 'noop', queue => 'rate')"],
}


def _commit_rate(dsn: str, statements: list[str], clients: int, seconds: float) -> float:
    """Transactions a second from `clients` connections, each running `statements` and
    committing, back to back, for `seconds`."""
    counts = [0] * clients
    barrier = threading.Barrier(clients + 1)
    deadline: list[float] = []

    def client(index: int) -> None:
        connection = psycopg2.connect(dsn)
        try:
            cursor = connection.cursor()
            barrier.wait()
            while time.perf_counter() < deadline[0]:
                for statement in statements:
                    cursor.execute(statement)
                connection.commit()
                counts[index] += 1
        finally:
            connection.close()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    deadline.append(time.perf_counter() + seconds)
    started = time.perf_counter()
    barrier.wait()
    for thread in threads:
        thread.join()
    return sum(counts) / (time.perf_counter() - started)


def commit_rates(stack: Stack, seconds: float) -> dict[str, float]:
    """Commits a second of 8 concurrent clients: plain inserts, the same with a notification,
    and jobfleet.enqueue() (no fleet runs; the jobs stay queued)."""
    dsn = libpq_url(stack.settings.database_url)
    setup = psycopg2.connect(dsn)
    try:
        setup.autocommit = True
        setup.cursor().execute("CREATE TABLE rate_rows (id bigserial PRIMARY KEY, at timestamptz)")
        return {
            f"{name}_commits_per_second": _commit_rate(dsn, statements, RATE_CLIENTS, seconds)
            for name, statements in _STEPS.items()
        }
    finally:
        setup.cursor().execute("DROP TABLE rate_rows")
        setup.close()
