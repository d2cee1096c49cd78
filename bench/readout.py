"""Read-outs of the benchmark (its own SQL, beside the product's): how a drain went, how fast
jobs were picked up, and the history and housekeeping it sets up between runs."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from sqlalchemy import create_engine, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session


@dataclass(frozen=True)
class DrainWindow:
    completed: int
    attempts: int
    jobs_with_one_attempt: int
    seconds: float  # first claim to last finish
    first_claim: float  # min(started_at), seconds since the epoch by Postgres' clock
    first_finish: float  # min(finished_at), likewise
    last_finish: float  # max(finished_at), likewise


def drain_window(session: Session, tag: str) -> DrainWindow:
    row = session.execute(
        text(
            """
            SELECT count(*) FILTER (WHERE j.status = 'completed') AS completed,
                   extract(epoch FROM max(j.finished_at) - min(j.started_at)) AS seconds,
                   extract(epoch FROM min(j.started_at)) AS first_claim,
                   extract(epoch FROM min(j.finished_at)) AS first_finish,
                   extract(epoch FROM max(j.finished_at)) AS last_finish,
                   (SELECT count(*) FROM job_attempts a JOIN jobs k ON k.id = a.job_id
                     WHERE k.task = 'noop' AND k.queue = :tag) AS attempts,
                   count(*) FILTER (WHERE j.attempts = 1) AS single
              FROM jobs j WHERE j.queue = :tag
            """
        ),
        {"tag": tag},
    ).one()
    return DrainWindow(
        row.completed,
        row.attempts,
        row.single,
        float(row.seconds or 0),
        float(row.first_claim or 0),
        float(row.first_finish or 0),
        float(row.last_finish or 0),
    )


@dataclass(frozen=True)
class Throughput:
    jobs: int
    completed: int
    attempts: int
    seconds: float  # first job created to last job finished
    behind: float  # last job created to last job finished: how far completions trailed


def throughput(session: Session, queue: str, since: float = 0.0) -> Throughput:
    """The jobs of the queue created at or after `since` (seconds since the epoch)."""
    row = session.execute(
        text(
            """
            SELECT count(*) AS jobs,
                   count(*) FILTER (WHERE status = 'completed') AS completed,
                   coalesce(sum(attempts), 0) AS attempts,
                   extract(epoch FROM max(finished_at) - min(created_at)) AS seconds,
                   extract(epoch FROM max(finished_at) - max(created_at)) AS behind
              FROM jobs WHERE queue = :queue AND created_at >= to_timestamp(:since)
            """
        ),
        {"queue": queue, "since": since},
    ).one()
    return Throughput(
        row.jobs, row.completed, int(row.attempts), float(row.seconds or 0), float(row.behind or 0)
    )


@dataclass(frozen=True)
class DatabaseWork:
    commits: int
    active_ms: float  # Postgres' own count of the time its sessions spent running statements
    idle_in_transaction_ms: float


def database_work(session: Session) -> DatabaseWork:
    """This database's counters in `pg_stat_database` so far (read from a new transaction: the
    statistics a transaction sees stay as they were when it first read them)."""
    session.execute(text("SELECT pg_stat_clear_snapshot()"))
    row = session.execute(
        text(
            "SELECT xact_commit, active_time, idle_in_transaction_time FROM pg_stat_database "
            "WHERE datname = current_database()"
        )
    ).one()
    return DatabaseWork(int(row[0]), float(row[1]), float(row[2]))


def count_status(session: Session, queue: str, status: str) -> int:
    return int(
        session.scalar(
            text("SELECT count(*) FROM jobs WHERE queue = :q AND status = :s"),
            {"q": queue, "s": status},
        )
        or 0
    )


def has_unfinished(session: Session, queue: str) -> bool:
    """Whether any job of the queue is still queued or running. Cheap enough to poll during a
    measurement (the partial indexes of live jobs), unlike counting finished ones."""
    return bool(
        session.scalar(
            text(
                "SELECT EXISTS (SELECT 1 FROM jobs WHERE status = 'queued' AND queue = :q) "
                "OR EXISTS (SELECT 1 FROM jobs WHERE status = 'processing' AND queue = :q)"
            ),
            {"q": queue},
        )
    )


def pickup_milliseconds(session: Session, queue: str) -> list[float]:
    """started_at - created_at (the API's insert transaction) of every job of the queue that
    the load stamped (`payload.sent`), in ms."""
    return [
        float(ms)
        for ms in session.scalars(
            text(
                "SELECT extract(epoch FROM started_at - created_at) * 1000 FROM jobs "
                "WHERE queue = :q AND started_at IS NOT NULL AND payload ? 'sent'"
            ),
            {"q": queue},
        ).all()
    ]


def pickup_sent_to_started(session: Session, queue: str) -> list[float]:
    """Milliseconds from the client's clock just before it sent each job (`payload.sent`) to
    the task's own clock as it started (`result.started`, from the `bench.started` task): the
    peers' measure of pickup. Both are this machine's clock, read by different processes."""
    return [
        float(ms)
        for ms in session.scalars(
            text(
                "SELECT ((result->>'started')::float8 - (payload->>'sent')::float8) * 1000 "
                "FROM jobs WHERE queue = :q AND status = 'completed' AND result ? 'started' "
                "AND payload ? 'sent'"
            ),
            {"q": queue},
        ).all()
    ]


def started_at(session: Session, queue: str) -> dict[str, float]:
    """started_at of every started job of the queue, as Unix seconds, by job id."""
    rows = session.execute(
        text(
            "SELECT id, extract(epoch FROM started_at) FROM jobs "
            "WHERE queue = :q AND started_at IS NOT NULL"
        ),
        {"q": queue},
    ).all()
    return {str(job_id): float(at) for job_id, at in rows}


def listening(session: Session) -> bool:
    """Whether a listener of transactional enqueues has sent its LISTEN on this database."""
    return bool(
        session.scalar(
            text(
                "SELECT EXISTS (SELECT 1 FROM pg_stat_activity "
                "WHERE datname = current_database() AND application_name = 'jobfleet-listener' "
                "AND query <> '')"
            )
        )
    )


def delete_job(session: Session, job_id: uuid.UUID) -> None:
    session.execute(text("DELETE FROM jobs WHERE id = :id"), {"id": job_id})


def seed_history(session: Session, ids: list[uuid.UUID]) -> None:
    """Completed jobs with an attempt each, as months of history would leave them."""
    session.execute(
        text(
            """
            WITH made AS (
                INSERT INTO jobs (id, tenant, queue, task, payload, status, attempts,
                                  max_retries, timeout_seconds, run_at, started_at, finished_at,
                                  result, created_at)
                SELECT id, 'history', 'history', 'noop', '{}', 'completed', 1, 3, 300,
                       now() - interval '1 day', now() - interval '1 day',
                       now() - interval '1 day', 'null', now() - interval '1 day'
                  FROM unnest(CAST(:ids AS uuid[])) AS id
                RETURNING id, started_at, finished_at
            )
            INSERT INTO job_attempts (job_id, attempt, worker_id, started_at, finished_at,
                                      outcome)
            SELECT id, 1, 'history', started_at, finished_at, 'completed' FROM made
            """
        ),
        {"ids": [str(job_id) for job_id in ids]},
    )


def vacuum(database_url: str) -> None:
    """VACUUM ANALYZE the job tables, as autovacuum would have long done to old history, so
    that it does not run in the middle of a measurement instead."""
    engine = create_engine(database_url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as connection:
            connection.execute(text("VACUUM ANALYZE jobs, job_attempts"))
    finally:
        engine.dispose()


def checkpoint(database_url: str) -> None:
    """Flush dirty pages now, so that no run pays for the previous run's writes (a checkpoint
    in the middle of a measurement rewrites whole pages to the WAL). Needs a superuser or
    pg_checkpoint; without the right, runs simply share the server's own checkpoints."""
    engine = create_engine(database_url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as connection:
            connection.execute(text("CHECKPOINT"))
    except DBAPIError:
        pass
    finally:
        engine.dispose()
