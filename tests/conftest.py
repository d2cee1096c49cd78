"""Real Postgres and Redis, isolated: a database and a Redis key prefix made for this run; and
the fixtures several test files share (keys, live processes, private servers).

The servers are the ones at DATABASE_URL and REDIS_URL (./scripts/test.sh starts private ones
when those do not answer). The test database is created fresh and dropped at the end; every
Redis key the tests write carries a prefix of their own and is deleted at the end.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import uuid
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import text

from app.main import create_app
from app.services import auth
from app.services.context import Context
from app.settings import Settings, load_settings
from app.store.admin import migrate
from devtools.postgres_server import PrivatePostgres
from devtools.redis_server import PrivateRedis
from devtools.sandbox import delete_keys, erase, with_database
from tests.fleet_support import workers_of
from tests.helpers import SUMMARY, LiveAPI, LiveFleet, wait_until

# The client package (client/src) of this checkout goes before the venv's editable install of it,
# which may point at another checkout sharing the venv; the test modules import it after this.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "client" / "src"))

# Heartbeats (and so leases) the session's fleets use: a lost worker shows within seconds.
FLEET_HEARTBEATS = {"HEARTBEAT_INTERVAL_SECONDS": "0.5", "HEARTBEAT_TTL_SECONDS": "5"}


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """The summaries that passed tests left (tests/helpers.py SUMMARY), at the end of the run."""
    for report in terminalreporter.stats.get("passed", []):
        for title, content in report.sections:
            if title.startswith(f"Captured {SUMMARY}"):
                terminalreporter.write_sep("-", title.removeprefix("Captured ").rsplit(" ", 1)[0])
                terminalreporter.write_line(content)


@pytest.fixture(scope="session")
def settings() -> Iterator[Settings]:
    run = uuid.uuid4().hex[:8]
    configured = load_settings(
        environment="test",
        key_prefix=f"jftest{run}",
        rate_limit_submit="100000/minute",
        rate_limit_read="100000/minute",
        rate_limit_write="100000/minute",
        rate_limit_admin="100000/minute",
        log_level="WARNING",
        # Tests that want the API's metrics port give it a free one; 9101 may be in use.
        api_metrics_port=0,
    )
    database_url = with_database(configured.database_url, f"jobfleet_test_{run}")
    test_settings = configured.model_copy(update={"database_url": database_url})
    migrate(test_settings.database_url)
    yield test_settings
    erase(test_settings)


@pytest.fixture(scope="session")
def session_ctx(settings: Settings) -> Iterator[Context]:
    context = Context(settings)
    yield context
    context.close()


# The tables `ctx` empties before each test.
TABLES = (
    "jobs", "job_attempts", "api_keys", "job_stats", "stats_marks", "audit_events",
    "bulk_operations", "schedules",
)  # fmt: skip


def truncate(context: Context, tables: Iterable[str]) -> None:
    with context.db.transaction() as session:
        session.execute(text(f"TRUNCATE {', '.join(tables)} CASCADE"))


def table_sizes(context: Context) -> dict[str, int]:
    """Each of TABLES' bytes on disk, with its indexes and TOAST."""
    with context.db.transaction() as session:
        rows = session.execute(
            text(
                "SELECT relname, pg_total_relation_size(oid) FROM pg_class "
                "WHERE relname = ANY(:tables) AND relkind = 'r' "
                "AND relnamespace = current_schema()::regnamespace"
            ),
            {"tables": list(TABLES)},
        ).all()
    return {str(name): int(size) for name, size in rows}


@pytest.fixture(scope="session")
def empty_sizes(session_ctx: Context) -> dict[str, int]:
    """TABLES' sizes just after a TRUNCATE: no row, live or dead, and empty indexes."""
    truncate(session_ctx, TABLES)
    sizes = table_sizes(session_ctx)
    assert set(sizes) == set(TABLES), sizes
    return sizes


@pytest.fixture
def ctx(session_ctx: Context, empty_sizes: dict[str, int]) -> Context:
    """The shared context, with empty tables and no Redis keys of ours before each test.

    Only the tables that were written to since their last TRUNCATE are truncated again (a
    TRUNCATE of all seven took 50 ms or more a test): any write, even one rolled back, grows a
    table past its size just after a TRUNCATE, and a table still of that size is as one just
    truncated."""
    written = [
        table for table, size in table_sizes(session_ctx).items() if size != empty_sizes[table]
    ]
    if written:
        truncate(session_ctx, written)
    delete_keys(session_ctx.redis.client, session_ctx.settings.key_prefix)
    return session_ctx


@pytest.fixture
def make_key(ctx: Context) -> Callable[..., str]:
    def make(tenant: str = "acme", *scopes: str) -> str:
        chosen = [auth.Scope(s) for s in (scopes or ("producer",))]
        _, plain = auth.create_key(ctx, tenant, chosen)
        return plain

    return make


@pytest.fixture
def app(settings: Settings, ctx: Context) -> FastAPI:
    return create_app(settings)


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app) as test_client:
        yield test_client


@pytest.fixture
def producer(make_key: Callable[..., str]) -> dict[str, str]:
    """Authorization headers of a producer key of tenant `acme`."""
    return {"Authorization": f"Bearer {make_key('acme', 'producer')}"}


@pytest.fixture
def admin(make_key: Callable[..., str]) -> dict[str, str]:
    """Authorization headers of an operator's admin key (tenant `ops`)."""
    return {"Authorization": f"Bearer {make_key('ops', 'admin')}"}


@pytest.fixture
def untraced(monkeypatch: pytest.MonkeyPatch) -> None:
    """The processes this test starts run without coverage.

    For tests that run thousands of jobs or measure speed: coverage (pyproject.toml, `patch =
    subprocess`) traces every process a test starts, which costs them about half as much CPU
    again, and the code these processes run is measured by the tests that assert on it.
    Coverage starts in a process only when this variable is non-empty.
    """
    monkeypatch.setenv("COVERAGE_PROCESS_CONFIG", "")


@pytest.fixture(scope="session")
def live_api(settings: Settings) -> Iterator[LiveAPI]:
    api = LiveAPI(settings, API_WORKERS="2")
    yield api
    api.stop()


@pytest.fixture
def start_api(settings: Settings) -> Iterator[Callable[..., LiveAPI]]:
    """Start live APIs (one worker, stderr to pytest's capture) on the session's settings or
    on those given; stopped at the end of the test."""
    started: list[LiveAPI] = []

    def start(on: Settings | None = None, **overrides: str) -> LiveAPI:
        options = {"API_WORKERS": "1", **overrides}
        api = LiveAPI(on or settings, capture_stderr=False, **options)
        started.append(api)
        return api

    yield start
    for api in started:
        api.stop()


@pytest.fixture
def start_fleet(settings: Settings, ctx: Context) -> Iterator[Callable[..., LiveFleet]]:
    """Start live fleets and wait until their workers beat; stopped at the end of the test.

    A fleet runs on the session's settings with fast heartbeats, or on the settings given (`on`)
    as they are; its workers are awaited in the Redis of `within` (default: the session's).
    """
    started: list[LiveFleet] = []

    def start(
        processes: int = 2,
        threads: int = 2,
        on: Settings | None = None,
        within: Context | None = None,
        **options: Any,
    ) -> LiveFleet:
        if on is None:
            on, options = settings, {**FLEET_HEARTBEATS, **options}
        fleet = LiveFleet(on, processes, threads, **options)
        started.append(fleet)
        beats_in = within or ctx
        if processes:
            wait_until(lambda: len(workers_of(beats_in, fleet.host)) >= processes, timeout=60)
        return fleet

    yield start
    for fleet in started:
        fleet.stop()


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    """A Redis of the test's own, which it may stop, restart empty or flush."""
    with PrivateRedis(tmp_path / "redis") as server:
        yield server


@pytest.fixture
def private_postgres() -> Iterator[PrivatePostgres]:
    """A Postgres of the test's own (fsync off), which it may stop and restart."""
    # Not under tmp_path: as root, postgres runs as another user who must be able to reach the
    # data directory, and any pytest session that starts meanwhile resets
    # /tmp/pytest-of-<user> to 0700 (initdb or a restart would then fail on permissions).
    directory = Path(tempfile.mkdtemp(prefix="jobfleet-postgres-"))
    try:
        with PrivatePostgres(directory / "pg", fast=True) as server:
            yield server
    finally:
        shutil.rmtree(directory, ignore_errors=True)
