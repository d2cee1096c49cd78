"""A jobs table that autovacuum forgot: a private Postgres with autovacuum off, a million jobs
churned through the life of a job (submit, claim, a lease renewal, a failed first attempt for
some, promotion, a second claim, completion), then every query the duties, the claim and the
finish run, timed and explained, and a drain, each compared with a fresh table on the same
server in the same run.

The churn is bulk SQL of the benchmark's own, one statement per step and batch, each step its
own transaction, by primary key, writing the same columns as the product's statements
(app/store/claims.py, app/store/maintenance.py): every step leaves the same dead row versions
and the same index entries as a fleet would, in a fraction of the time. The duties' own rounds
(recovery, the promoter, the reconciler) and scrapes of the gauges run between the batches, as
they run beside a fleet: their scans are what lets Postgres reclaim dead index entries without
VACUUM. The jobs are stamped as a day's work before the run, so that the stats duty's window
(the last two minutes) holds a day's rate of them, not the whole churn.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session
from uuid_utils.compat import uuid7

from app.domain.records import Lease, ReadyList
from app.domain.schemas import JobCreate
from app.domain.states import TERMINAL, AttemptOutcome, JobStatus
from app.services import jobs
from app.services.context import Context
from app.services.gauges import FleetGauges
from app.services.maintenance import Duty, Promoter, Reconciler, Recovery
from app.store import bulk as bulk_store
from app.store import claims, maintenance
from app.store import drain as drain_store
from app.store import jobs as job_store
from app.store import stats as stats_store
from bench.stack import Stack
from devtools.postgres_server import PrivatePostgres

# The duties run beside a fleet: recovery and the reconciler every second, the promoter four
# times a second, the reconciler's sweep and a scrape of the gauges every ten. A batch stands
# for a second of this machine's fleet (some 2,500 jobs): a round of each of those three duties
# (their own code) follows it, on a clock that advances a second a batch, and a scrape every
# tenth. How soon the duties' scans meet the dead index entries decides how many of them
# Postgres reclaims without VACUUM.
CHURN_BATCH = 2_500
SCRAPE_EVERY = 10
SPAN = timedelta(days=1)
QUEUES = 4
TENANTS = 5
RETRY_EVERY = 20  # one job in 20 fails its first attempt and runs again
# The live work the queries find among the dead: what a quiet fleet holds at any moment.
LIVE_QUEUED = 500  # in each of two queues
LIVE_RUNNING = 16
LIVE_SCHEDULED = 100
REPEATS = 20
DRAINS = 3  # of each table, alternating
TARGET_MS = 5.0
# The fleet's defaults: a lease of HEARTBEAT_TTL_SECONDS, renewed every heartbeat interval.
LEASE_SECONDS = 10.0
SILENT_SECONDS = 4.0

_INSERT = """
    INSERT INTO jobs (id, tenant, queue, task, payload, priority, status, request_fingerprint,
                      max_retries, timeout_seconds, run_at, created_at, updated_at)
    SELECT id, 'tenant-' || (n % :tenants), 'churn-' || (n % :queues), 'noop', '{}', 0,
           'queued', md5(id::text), 3, 300, at, at, at
      FROM unnest(CAST(:ids AS uuid[]), CAST(:ats AS timestamptz[]))
           WITH ORDINALITY AS i(id, at, n)
"""
# The claim's columns (claims._CLAIM), at the job's own times.
_CLAIM = """
    UPDATE jobs
       SET status = 'processing', attempts = attempts + 1, lease_token = gen_random_uuid(),
           lease_expires_at = run_at + interval '11 seconds',
           worker_id = 'churn:' || (attempts % 4), started_at = run_at + interval '1 second',
           updated_at = run_at + interval '1 second'
     WHERE id = ANY(CAST(:ids AS uuid[])) AND status || '' = 'queued'
"""
# A heartbeat's renewal (claims._EXTEND).
_RENEW = """
    UPDATE jobs SET lease_expires_at = lease_expires_at + interval '2 seconds'
     WHERE id = ANY(CAST(:ids AS uuid[])) AND status || '' = 'processing'
"""
# A failed attempt scheduled for a retry, with its attempt row (claims._FINISH).
_RETRY = """
    WITH finished AS (
        UPDATE jobs
           SET status = 'scheduled', result = NULL, last_error = 'churn: a passing failure',
               run_at = started_at + interval '3 seconds', finished_at = NULL,
               lease_token = NULL, lease_expires_at = NULL,
               updated_at = started_at + interval '1 second'
         WHERE id = ANY(CAST(:ids AS uuid[])) AND status || '' = 'processing'
        RETURNING id, attempts, worker_id, started_at, updated_at
    )
    INSERT INTO job_attempts (job_id, attempt, worker_id, started_at, finished_at, outcome,
                              error)
    SELECT id, attempts, worker_id, started_at, updated_at, 'failed', 'churn: a passing failure'
      FROM finished
"""
# The promoter (maintenance._PROMOTE).
_PROMOTE = """
    UPDATE jobs SET status = 'queued', updated_at = run_at
     WHERE id = ANY(CAST(:ids AS uuid[])) AND status || '' = 'scheduled'
"""
# Successes with their attempt rows (claims._COMPLETE_MANY).
_COMPLETE = """
    WITH finished AS (
        UPDATE jobs
           SET status = 'completed', result = 'null', last_error = NULL, lease_token = NULL,
               lease_expires_at = NULL, finished_at = started_at + interval '1 second',
               updated_at = started_at + interval '1 second'
         WHERE id = ANY(CAST(:ids AS uuid[])) AND status || '' = 'processing'
        RETURNING id, attempts, worker_id, started_at, finished_at
    )
    INSERT INTO job_attempts (job_id, attempt, worker_id, started_at, finished_at, outcome)
    SELECT id, attempts, worker_id, started_at, finished_at, 'completed' FROM finished
"""


@contextlib.contextmanager
def private_postgres() -> Iterator[str]:
    """A Postgres of the benchmark's own with autovacuum off (a shared server's settings are
    never changed), in a temporary directory removed afterwards; yields its URL."""
    directory = Path(tempfile.mkdtemp(prefix="jf-bench-novacuum-"))
    server = PrivatePostgres(directory / "data", options=("autovacuum=off",))
    try:
        server.start()
        yield server.url
    finally:
        server.stop()
        shutil.rmtree(directory, ignore_errors=True)


def churn(ctx: Context, total: int, now: datetime) -> float:
    """`total` jobs through their whole life, spread over the SPAN before `now`, with the
    duties' rounds in between; returns the seconds it took."""
    started = time.perf_counter()
    duties: list[Duty] = [Recovery(ctx), Promoter(ctx), Reconciler(ctx)]
    clock = time.time()
    engine = create_engine(ctx.settings.database_url, pool_size=1)
    try:
        with engine.connect() as connection:
            for batch, first in enumerate(range(0, total, CHURN_BATCH)):
                count = min(CHURN_BATCH, total - first)
                ats = [now - SPAN * (1 - (first + n) / total) for n in range(count)]
                ids = [str(uuid7(nanoseconds=int(at.timestamp() * 1e9))) for at in ats]
                retried = ids[::RETRY_EVERY]
                steps: list[tuple[str, dict[str, Any]]] = [
                    (_INSERT, {"ids": ids, "ats": ats, "tenants": TENANTS, "queues": QUEUES}),
                    (_CLAIM, {"ids": ids}),
                    (_RENEW, {"ids": ids}),
                    (_RETRY, {"ids": retried}),
                    (_PROMOTE, {"ids": retried}),
                    (_CLAIM, {"ids": retried}),
                    (_COMPLETE, {"ids": ids}),
                ]
                for statement, params in steps:
                    connection.execute(text(statement), params)
                    connection.commit()
                for duty in duties:
                    duty.run_once(clock + batch)
                if batch % SCRAPE_EVERY == 0:
                    list(FleetGauges(ctx).collect())
    finally:
        engine.dispose()  # a backend that exits sends its table statistics
    return time.perf_counter() - started


def table_figures(database_url: str) -> dict[str, float]:
    """Live and dead tuples of the job tables (pg_stat_user_tables, as the gauge reads them)
    and the size of the tables and of the indexes of work in play, in MB."""
    engine = create_engine(database_url)
    figures: dict[str, float] = {}
    try:
        with engine.connect() as connection:
            for row in connection.execute(
                text(
                    "SELECT relname, n_live_tup, n_dead_tup, n_tup_upd, n_tup_hot_upd "
                    "FROM pg_stat_user_tables WHERE relname IN ('jobs', 'job_attempts')"
                )
            ):
                figures[f"{row.relname}_live_tuples"] = float(row.n_live_tup)
                figures[f"{row.relname}_dead_tuples"] = float(row.n_dead_tup)
                if row.relname == "jobs":
                    # Heap-only updates write no index entry: lease renewals, once no index
                    # holds the lease's expiry, when the row's page has room.
                    figures["jobs_hot_update_share"] = row.n_tup_hot_upd / max(1, row.n_tup_upd)
            for name in ("jobs", "jobs_pkey", *_WORK_INDEXES):
                size = connection.scalar(
                    text("SELECT pg_relation_size(to_regclass(:name))"), {"name": name}
                )
                figures[f"{name}_mb"] = (size or 0) / 2**20
    finally:
        engine.dispose()
    return figures


# The partial indexes of work in play; the running jobs' index by its name before and after
# migration 0008 (the one the schema lacks counts 0).
_WORK_INDEXES = (
    "ix_jobs_queued_by_tenant",
    "ix_jobs_processing_lease",
    "ix_jobs_processing_token",
    "ix_jobs_scheduled_run_at",
)


@dataclass(frozen=True)
class Live:
    """The work in play when the queries are timed."""

    queued: list[uuid.UUID]
    lists: list[ReadyList]
    running: list[Lease]
    scheduled: list[uuid.UUID]


def _submit(stack: Stack, requests: list[JobCreate]) -> list[uuid.UUID]:
    results = jobs.submit_many(stack.ctx, stack.principal, requests, full=False)
    return [r.record.id for r in results if isinstance(r, jobs.Submitted)]


def make_live(stack: Stack) -> Live:
    """Queued jobs in two queues, jobs running under fresh leases, jobs scheduled an hour
    ahead: made through the product's own submit and claim."""
    queued: list[uuid.UUID] = []
    for queue in ("live-a", "live-b"):
        queued += _submit(stack, [JobCreate(task="noop", queue=queue)] * LIVE_QUEUED)
    later = [JobCreate(task="noop", queue="live-a", delay_seconds=3600)] * LIVE_SCHEDULED
    scheduled = _submit(stack, later)
    to_run = _submit(stack, [JobCreate(task="noop", queue="live-run")] * LIVE_RUNNING)
    with stack.ctx.db.transaction() as session:
        claimed = claims.claim(session, to_run, "bench-live:1:1", LEASE_SECONDS)
        lists = maintenance.lists_with_queued_jobs(session)
        # The stats duty has run before: the timed rounds count from its mark, as every round
        # but a first one does (a first counts the whole last hour).
        stats_store.roll_up(session, datetime.now().astimezone())
    running = [Lease(c.id, c.lease_token, c.attempt, c.max_retries) for c in claimed]
    return Live(queued, lists, running, scheduled)


def duty_queries(live: Live) -> dict[str, Callable[[Session], object]]:
    """Every query of the duties, the lease renewal, the claim and the finish, by name; the
    benchmark rolls back what each writes."""
    head = live.queued[:10]
    lists = [where for where in live.lists if where.queue == "live-a"] or live.lists
    finished_statuses = TERMINAL - {JobStatus.FAILED}
    return {
        "recovery_expired": lambda s: claims.expired_leases(s, 1000),
        "recovery_unrenewed": lambda s: claims.unrenewed_leases(
            s, SILENT_SECONDS, LEASE_SECONDS, 1000
        ),
        "recovery_held_by": lambda s: claims.held_by(s, "bench-live:1:1"),
        "lease_renewal": lambda s: claims.extend_leases(
            s, [(lease.id, lease.lease_token) for lease in live.running], LEASE_SECONDS
        ),
        "promoter_due": lambda s: maintenance.promote_due(s, 1000),
        "promoter_stale": lambda s: maintenance.stale_scheduled(s, live.scheduled),
        "sweep_lists": maintenance.lists_with_queued_jobs,
        "sweep_head": lambda s: maintenance.oldest_queued_run_at(s, head),
        "sweep_lost": lambda s: maintenance.queued_before(
            s, lists[0], datetime.now().astimezone() - timedelta(seconds=30), 1000
        ),
        "retention_finished": lambda s: maintenance.delete_finished(
            s, finished_statuses, 7 * 86_400, 1000
        ),
        "retention_failed": lambda s: maintenance.delete_finished(
            s, {JobStatus.FAILED}, 30 * 86_400, 1000
        ),
        "retention_stats": lambda s: stats_store.delete_old(s, 86_400, 1000),
        "retention_bulk": lambda s: bulk_store.delete_finished(s, 7 * 86_400, 1000),
        "stats_round": lambda s: stats_store.roll_up(s, datetime.now().astimezone()),
        "bulk_active": lambda s: bulk_store.active_ids(s, 20),
        "gauges": job_store.cheap_counts,
        "burst_probe": lambda s: drain_store.queues_with_work(s, ["live-a", "live-run"]),
        "claim": lambda s: claims.claim(s, live.queued[-10:], "bench-live:1:2", LEASE_SECONDS),
        "finish_many": lambda s: claims.complete_many(
            s, [(lease, "null") for lease in live.running[:8]]
        ),
        "finish_one": lambda s: claims.finish(
            s, live.running[-1], JobStatus.COMPLETED, AttemptOutcome.COMPLETED, "null"
        ),
    }


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))]


class _Notices(logging.Handler):
    """The server's notices: SQLAlchemy's psycopg2 dialect takes them off the connection
    after each statement and logs them (at INFO) to this logger."""

    LOGGER = "sqlalchemy.dialects.postgresql"

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage().removeprefix("NOTICE:  "))

    @contextlib.contextmanager
    def collecting(self) -> Iterator[list[str]]:
        logger = logging.getLogger(self.LOGGER)
        level, propagate = logger.level, logger.propagate
        logger.addHandler(self)
        logger.setLevel(logging.INFO)
        logger.propagate = False  # the plans are printed once, with the slow figures
        try:
            yield self.messages
        finally:
            logger.removeHandler(self)
            logger.setLevel(level)
            logger.propagate = propagate


def _load_auto_explain(connection: Connection) -> bool:
    """Whether the server has auto_explain (contrib; a server built without it times the
    queries all the same)."""
    try:
        connection.execute(text("LOAD 'auto_explain'"))
    except DBAPIError:
        connection.rollback()
        return False
    connection.commit()
    return True


def _explained(connection: Connection, query: Callable[[Session], object]) -> str:
    """The plans of the statements `query` runs, with their times and buffers (auto_explain,
    sent back as notices): EXPLAIN (ANALYZE, BUFFERS) of exactly what the product runs."""
    settings = ("log_min_duration = 0", "log_analyze = on", "log_buffers = on",
                "log_level = notice")  # fmt: skip
    for setting in settings:
        connection.execute(text(f"SET auto_explain.{setting}"))
    connection.commit()
    session = Session(bind=connection)
    try:
        with _Notices().collecting() as notices:
            query(session)
    finally:
        session.rollback()
        session.close()
        connection.execute(text("SET auto_explain.log_min_duration = -1"))
        connection.commit()
    return "\n".join(notices)


def time_queries(
    database_url: str, queries: dict[str, Callable[[Session], object]]
) -> tuple[dict[str, float], dict[str, str]]:
    """p50 and p95 (ms) of REPEATS calls of each query, each in a transaction rolled back,
    after one unmeasured call; and the plans of one more call."""
    engine = create_engine(database_url, pool_size=1)
    figures: dict[str, float] = {}
    plans: dict[str, str] = {}
    try:
        with engine.connect() as connection:
            explains = _load_auto_explain(connection)
            for name, query in queries.items():
                took = []
                for _ in range(REPEATS + 1):
                    session = Session(bind=connection)
                    began = time.perf_counter()
                    try:
                        query(session)
                        took.append((time.perf_counter() - began) * 1000)
                    finally:
                        session.rollback()
                        session.close()
                took = took[1:]
                figures[f"{name}_p50_ms"] = _percentile(took, 50)
                figures[f"{name}_p95_ms"] = _percentile(took, 95)
                if explains:
                    plans[name] = _explained(connection, query)
    finally:
        engine.dispose()
    return figures, plans


def lag_stack(stack: Stack, database_url: str, name: str) -> Stack:
    """A stack like `stack` (same Redis, keys of its own) in database `name` of the server at
    `database_url`."""
    settings = stack.settings.model_copy(
        update={
            "database_url": make_url(database_url)
            .set(database=name)
            .render_as_string(hide_password=False),
            "key_prefix": f"{stack.settings.key_prefix}-{name}",
        }
    )
    return Stack(settings, stack.api_workers)


def measure(
    stack: Stack, churned_jobs: int, drain: Callable[[Stack, str], dict[str, float]]
) -> dict[str, float]:
    """On one private server, a fresh database and a churned one: the duty queries on each,
    then drains on each in turn (DRAINS of each, the medians compared), so that the machine's
    other work weighs on both alike."""
    figures: dict[str, float] = {}
    with private_postgres() as url:
        fresh, churned = lag_stack(stack, url, "fresh"), lag_stack(stack, url, "churned")
        try:
            fresh.reset()
            churned.reset()
            now = datetime.now().astimezone()
            figures["churn_seconds"] = churn(churned.ctx, churned_jobs, now)
            figures.update(table_figures(churned.settings.database_url))
            timed = {
                name: time_queries(lag.settings.database_url, duty_queries(make_live(lag)))
                for name, lag in (("fresh", fresh), ("churned", churned))
            }
            rates: dict[str, list[float]] = {"fresh": [], "churned": []}
            for turn in range(DRAINS):
                for name, lag in (("fresh", fresh), ("churned", churned)):
                    rates[name].append(drain(lag, f"drain-{turn}")["jobs_per_second"])
        finally:
            fresh.close()
            churned.close()
    for name, values in rates.items():
        figures[f"{name}_drain_jobs_per_second"] = statistics.median(values)
    figures["drain_churned_to_fresh"] = (
        figures["churned_drain_jobs_per_second"] / figures["fresh_drain_jobs_per_second"]
    )
    for name in timed["churned"][0]:
        for table in ("fresh", "churned"):
            figures[f"{table}_{name}"] = timed[table][0][name]
    for name, plan in timed["churned"][1].items():
        took = timed["churned"][0][f"{name}_p50_ms"]
        if took >= TARGET_MS:
            print(
                f"\n  {name}: p50 {took:.1f} ms on the churned table\n    "
                + plan.replace("\n", "\n    ")
            )
    return figures
