"""The job tables when VACUUM does not come: the indexes of running and queued jobs reclaim their
dead entries as the duties scan them, the scrape-time gauges count dead row versions, and
migration 0008 sets the autovacuum parameters of the tables that churn (and takes them back)."""

from __future__ import annotations

import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import create_engine, text
from sqlalchemy.orm import Session

from app.domain.records import Lease
from app.services.context import Context
from app.services.gauges import FleetGauges
from app.services.maintenance import Reconciler
from app.settings import Settings
from app.store import claims
from app.store.admin import alembic_config, drop_database, migrate
from app.store.scans import plain_index_scans
from app.store.tables import CHURNING
from devtools.postgres_server import PrivatePostgres
from devtools.sandbox import delete_keys, with_database
from tests.helpers import wait_until

PAGE = 8192


def _queue(session: Session, count: int) -> list[uuid.UUID]:
    return list(
        session.scalars(
            text(
                "INSERT INTO jobs (tenant, queue, task, status, max_retries, timeout_seconds, "
                "run_at) SELECT 'acme', 'churn', 'noop', 'queued', 3, 300, "
                "now() + n * interval '1 microsecond' FROM generate_series(1, :n) AS n "
                "RETURNING id"
            ),
            {"n": count},
        ).all()
    )


def _pages(session: Session, index: str) -> int:
    return int(session.scalar(text("SELECT pg_relation_size(:i)"), {"i": index}) or 0) // PAGE


@pytest.fixture(scope="module")
def lonely(settings: Settings) -> Iterator[Context]:
    """A context on a Postgres of its own without autovacuum, as a server that runs none. Of
    its own also because a transaction open anywhere on a server, in any database, keeps
    Postgres from marking the entries of row versions deleted after it began: on a shared
    server, other work would decide what these tests measure."""
    directory = Path(tempfile.mkdtemp(prefix="jobfleet-postgres-"))
    try:
        with PrivatePostgres(directory / "pg", fast=True, options=("autovacuum=off",)) as server:
            url = with_database(server.url, "jobfleet")
            migrate(url)
            own = settings.model_copy(
                update={"database_url": url, "key_prefix": f"{settings.key_prefix}lonely"}
            )
            ctx = Context(own)
            yield ctx
            delete_keys(ctx.redis.client, own.key_prefix)
            ctx.close()
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def no_autovacuum(lonely: Context) -> Context:
    """The lonely context with empty tables and no keys."""
    with lonely.db.transaction() as session:
        session.execute(text("TRUNCATE jobs, job_attempts CASCADE"))
    delete_keys(lonely.redis.client, lonely.settings.key_prefix)
    return lonely


def test_the_running_jobs_index_stays_the_size_of_the_work_without_vacuum(
    no_autovacuum: Context,
) -> None:
    ctx = no_autovacuum
    # 10,000 attempts through the fleet's own statements, 250 at a time, each batch claimed,
    # renewed once and completed, and recovery's scan after each, as it runs every second
    # beside a fleet: 20,000 entries written to the index (a claim and a renewal each).
    for _ in range(40):
        with ctx.db.transaction() as session:
            queued = _queue(session, 250)
        with ctx.db.transaction() as session:
            claimed = claims.claim(session, queued, "host:1:1", 10.0)
        with ctx.db.transaction() as session:
            claims.extend_leases(session, [(c.id, c.lease_token) for c in claimed], 10.0)
        leases = [Lease(c.id, c.lease_token, c.attempt, c.max_retries) for c in claimed]
        with ctx.db.transaction() as session:
            assert len(claims.complete_many(session, [(x, "null") for x in leases])) == 250
        with ctx.db.transaction() as session:
            assert claims.expired_leases(session, 1000) == []
    with ctx.db.transaction() as session:
        pages = _pages(session, "ix_jobs_processing_token")
    # 250 running jobs fit in two or three leaf pages; the 20,000 entries, kept, take about 75
    # (as they did when the index was keyed by the lease's expiry, before migration 0008: its
    # dead entries piled up at its left end, where no insert ever reclaimed them).
    assert pages <= 12, pages


def _churn_queued(ctx: Context, rounds: int, between: Callable[[], object]) -> int:
    """`rounds` batches of 150 jobs submitted, claimed and completed, `between` after each;
    the pages of the queued jobs' index then."""
    for _ in range(rounds):
        with ctx.db.transaction() as session:
            queued = _queue(session, 150)
        with ctx.db.transaction() as session:
            claimed = claims.claim(session, queued, "host:1:1", 10.0)
        leases = [Lease(c.id, c.lease_token, c.attempt, c.max_retries) for c in claimed]
        with ctx.db.transaction() as session:
            claims.complete_many(session, [(x, "null") for x in leases])
        between()
    with ctx.db.transaction() as session:
        return _pages(session, "ix_jobs_queued_by_tenant")


def test_the_reconciler_keeps_the_queued_jobs_index_to_the_backlog_without_vacuum(
    no_autovacuum: Context,
) -> None:
    ctx = no_autovacuum
    reconciler = Reconciler(ctx)
    now = time.time()
    reconciler.run_once(now)  # the first round rebuilds Redis, the next one sweeps
    reconciler.run_once(now)
    # 6,000 jobs through the queue, the reconciler's round (a walk of the ready lists) after
    # every 150, as it runs every second beside a fleet: the page that takes the submits is
    # emptied of the claimed jobs' entries before it fills.
    tidied = _churn_queued(ctx, 40, lambda: reconciler.run_once(now))
    with ctx.db.transaction() as session:
        session.execute(text("TRUNCATE jobs CASCADE"))
    # The same without the rounds: every entry stays until VACUUM.
    kept = _churn_queued(ctx, 40, lambda: None)
    assert tidied <= 6, tidied
    assert kept >= 25, kept


def test_plain_index_scans_leave_the_planner_as_they_found_it(ctx: Context) -> None:
    with ctx.db.transaction() as session:
        with plain_index_scans(session):
            inside = session.scalar(text("SELECT current_setting('enable_bitmapscan')"))
        after = session.scalar(text("SELECT current_setting('enable_bitmapscan')"))
        session.execute(text("SET LOCAL enable_bitmapscan = off"))
        with plain_index_scans(session):
            pass
        kept = session.scalar(text("SELECT current_setting('enable_bitmapscan')"))
    assert (inside, after, kept) == ("off", "on", "off")


def _gauges(ctx: Context) -> dict[str, dict[str, float]]:
    families = {family.name: family for family in FleetGauges(ctx).collect()}
    return {
        name.removeprefix("jobfleet_table_"): {
            sample.labels["table"]: sample.value for sample in families[name].samples
        }
        for name in families
        if name.startswith("jobfleet_table_")
    }


def test_the_gauges_count_live_and_dead_row_versions_of_the_tables_that_churn(
    ctx: Context, settings: Settings
) -> None:
    with ctx.db.transaction() as session:
        ids = _queue(session, 100)
        for status in ("processing", "completed"):
            session.execute(
                text("UPDATE jobs SET status = :s WHERE id = ANY(:ids)"), {"s": status, "ids": ids}
            )
        # Sent with this transaction's commit, not up to a second later.
        session.execute(text("SELECT pg_stat_force_next_flush()"))

    gauges = wait_until(
        lambda: (g := _gauges(ctx))["dead_tuples"].get("jobs", 0) >= 200 and g, timeout=10
    )
    assert set(gauges) == {"live_tuples", "dead_tuples", "last_vacuum_timestamp_seconds",
                           "autovacuum_enabled"}  # fmt: skip
    for values in gauges.values():
        assert set(values) == set(CHURNING), "the table label takes the fixed names only"
    assert gauges["live_tuples"]["jobs"] >= 100

    engine = create_engine(settings.database_url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as connection:
            server_on = connection.scalar(text("SELECT current_setting('autovacuum') = 'on'"))
            connection.execute(text("VACUUM job_stats"))
            connection.execute(text("ALTER TABLE job_stats SET (autovacuum_enabled = false)"))
        try:
            gauges = _gauges(ctx)
        finally:
            with engine.connect() as connection:
                connection.execute(text("ALTER TABLE job_stats RESET (autovacuum_enabled)"))
    finally:
        engine.dispose()
    vacuumed = datetime.fromtimestamp(gauges["last_vacuum_timestamp_seconds"]["job_stats"], UTC)
    assert abs(datetime.now(UTC) - vacuumed) < timedelta(minutes=1)
    assert gauges["autovacuum_enabled"]["job_stats"] == 0
    assert gauges["autovacuum_enabled"]["jobs"] == (1 if server_on else 0)


def _reloptions(session: Session) -> dict[str, list[str]]:
    rows = session.execute(
        text(
            "SELECT relname, coalesce(reloptions, '{}') AS options FROM pg_class "
            "WHERE relname IN ('jobs', 'job_attempts', 'job_stats') AND relkind = 'r'"
        )
    ).all()
    return {row.relname: sorted(row.options) for row in rows}


def _indexes(session: Session) -> set[str]:
    return set(
        session.scalars(text("SELECT indexname FROM pg_indexes WHERE tablename = 'jobs'")).all()
    )


def test_migration_0008_tunes_autovacuum_and_swaps_the_running_jobs_index(
    settings: Settings,
) -> None:
    url = with_database(settings.database_url, f"{settings.key_prefix}_m0008")
    migrate(url, "0007")
    engine = create_engine(url)
    try:
        with Session(engine) as session:
            assert _reloptions(session) == {"jobs": [], "job_attempts": [], "job_stats": []}
            assert "ix_jobs_processing_lease" in _indexes(session)
        migrate(url, "0008")
        with Session(engine) as session:
            options = _reloptions(session)
            indexes = _indexes(session)
            valid = session.scalar(
                text(
                    "SELECT indisvalid FROM pg_index "
                    "WHERE indexrelid = to_regclass('ix_jobs_processing_token')"
                )
            )
        assert "autovacuum_vacuum_scale_factor=0.02" in options["jobs"]
        assert "autovacuum_vacuum_cost_limit=1000" in options["jobs"]
        assert "autovacuum_vacuum_insert_scale_factor=0.05" in options["job_attempts"]
        assert options["job_stats"] == ["autovacuum_vacuum_scale_factor=0.05"]
        assert "ix_jobs_processing_lease" not in indexes and valid is True

        command.downgrade(alembic_config(url), "0007")
        with Session(engine) as session:
            assert _reloptions(session) == {"jobs": [], "job_attempts": [], "job_stats": []}
            indexes = _indexes(session)
        assert "ix_jobs_processing_lease" in indexes
        assert "ix_jobs_processing_token" not in indexes
    finally:
        engine.dispose()
        drop_database(url)
