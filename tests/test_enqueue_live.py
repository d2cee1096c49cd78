"""Transactional enqueue with live fleets: a job committed in an application's transaction
runs, one rolled back never exists anywhere; the SQL function from `psql`; the listener,
one at a time, handed over when its fleet stops; and the reconciler's sweep when no listener
listens."""

from __future__ import annotations

import shutil
import subprocess
import uuid
from typing import Any

import psycopg2
import pytest
from sqlalchemy import text

from app.dispatch import locks, reconcile
from app.enqueue import enqueue, enqueue_psycopg2
from app.services.context import Context
from app.services.listening import LOCK
from app.settings import Settings
from app.store.listening import APPLICATION_NAME, libpq_url
from tests.fleet_support import job_row, runs_per_job
from tests.helpers import wait_until

pytestmark = pytest.mark.live

FLEET = {"processes": 1, "threads": 2}


def listeners(ctx: Context) -> int:
    """Connections of this database that have sent LISTEN (a fresh one has sent nothing)."""
    with ctx.db.transaction() as session:
        return int(
            session.scalar(
                text(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                    "AND application_name = :name AND query <> ''"
                ),
                {"name": APPLICATION_NAME},
            )
        )


def listener_holder(ctx: Context) -> str | None:
    held = ctx.redis.client.get(ctx.keys.lock(LOCK))
    return held.decode() if held is not None else None


def exists(ctx: Context, job_id: str) -> bool:
    with ctx.db.transaction() as session:
        found = session.scalar(text("SELECT count(*) FROM jobs WHERE id = :id"), {"id": job_id})
    return bool(found)


def in_redis(ctx: Context, job_id: str) -> list[str]:
    """Every Redis key of ours that holds the id: ready lists, the delayed set."""
    client = ctx.redis.client
    found = []
    for key in client.scan_iter(ctx.keys.everything):
        kind = client.type(key)
        held = kind == b"list" and client.lpos(key, job_id) is not None
        held = held or (kind == b"zset" and client.zscore(key, job_id) is not None)
        if held:
            found.append(key.decode())
    return found


def completed(ctx: Context, job_id: str) -> bool:
    return bool(job_row(ctx, job_id).status == "completed")


def psql(settings: Settings, *commands: str) -> list[str]:
    """Run the commands in one psql session (each -c in turn); the lines it prints."""
    binary = shutil.which("psql")
    assert binary, "psql is not installed (scripts/test.sh installs it)"
    args = [binary, libpq_url(settings.database_url), "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1"]
    for command in commands:
        args += ["-c", command]
    done = subprocess.run(args, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


def test_a_committed_job_runs_and_a_rolled_back_one_never_exists(
    settings: Settings, ctx: Context, start_fleet: Any
) -> None:
    start_fleet(**FLEET)
    wait_until(lambda: listeners(ctx) == 1, timeout=30, what="the listener")
    with ctx.db.engine.connect() as connection:
        with connection.begin() as transaction:
            lost = str(enqueue(connection, "acme", "count").job.id)
            transaction.rollback()
        with connection.begin():
            kept = str(enqueue(connection, "acme", "count", {"order": 1}).job.id)
    # And on a plain psycopg2 connection, as an application without SQLAlchemy holds one.
    connection = psycopg2.connect(libpq_url(settings.database_url))
    try:
        plain = str(enqueue_psycopg2(connection, "acme", "count", {"order": 2}).job.id)
        connection.commit()
    finally:
        connection.close()
    wait_until(lambda: completed(ctx, kept) and completed(ctx, plain), timeout=30)
    # The listener hears committed ids in commit order: the rolled-back one would be first.
    assert not exists(ctx, lost)
    assert in_redis(ctx, lost) == []
    assert runs_per_job(ctx) == {kept: 1, plain: 1}


def test_the_sql_function_from_psql_enqueues_jobs_that_run(
    settings: Settings, ctx: Context, start_fleet: Any
) -> None:
    start_fleet(**FLEET)
    wait_until(lambda: listeners(ctx) == 1, timeout=30, what="the listener")
    now, later = psql(
        settings,
        "BEGIN",
        "CREATE TEMP TABLE orders (id int)",  # the application's own write
        "INSERT INTO orders VALUES (1)",
        "SELECT job_id FROM jobfleet.enqueue('acme', 'count', '{\"order\": 1}', "
        "idempotency_key => 'order:1')",
        "SELECT job_id FROM jobfleet.enqueue(tenant => 'acme', task => 'count', "
        "delay_seconds => 0.2)",
        "COMMIT",
    )
    (lost,) = psql(
        settings,
        "BEGIN",
        "SELECT job_id FROM jobfleet.enqueue('acme', 'count', '{\"order\": 2}')",
        "ROLLBACK",
    )
    wait_until(lambda: completed(ctx, now) and completed(ctx, later), timeout=30)
    assert job_row(ctx, now).payload == {"order": 1}
    assert not exists(ctx, lost) and in_redis(ctx, lost) == []
    # The same key again, from a new session: the existing job, created false.
    again = psql(settings, "SELECT job_id, created FROM jobfleet.enqueue('acme', 'count', "
                 "'{\"order\": 1}', idempotency_key => 'order:1')")  # fmt: skip
    assert again == [f"{now}|f"]
    assert runs_per_job(ctx) == {now: 1, later: 1}


def test_without_a_listener_the_reconciler_pushes_the_job(ctx: Context, start_fleet: Any) -> None:
    # Another holder keeps the listener's lock: no fleet may listen.
    client, keys = ctx.redis.client, ctx.keys
    assert locks.acquire(client, keys, LOCK, "elsewhere", 120)
    start_fleet(**FLEET, SWEEP_AFTER_SECONDS="1", RECONCILE_INTERVAL_SECONDS="0.2")
    wait_until(lambda: reconcile.epoch_present(client, keys), timeout=30, what="the epoch")
    with ctx.db.engine.begin() as connection:
        swept = str(enqueue(connection, "acme", "count").job.id)
    wait_until(lambda: completed(ctx, swept), timeout=30, what="the sweep")
    assert listeners(ctx) == 0 and listener_holder(ctx) == "elsewhere"
    # Lock free: a listener of the fleet takes over, and pushes the next job itself.
    assert locks.release(client, keys, LOCK, "elsewhere")
    wait_until(lambda: listeners(ctx) == 1, timeout=30, what="the listener")
    holder = listener_holder(ctx)
    assert holder is not None and ":manager:" in holder
    with ctx.db.engine.begin() as connection:
        heard = str(enqueue(connection, "acme", "count").job.id)
    wait_until(lambda: completed(ctx, heard), timeout=30, what="the pushed job")
    assert runs_per_job(ctx) == {swept: 1, heard: 1}


def test_one_fleet_listens_and_another_takes_over_when_it_stops(
    ctx: Context, start_fleet: Any
) -> None:
    first = start_fleet(**FLEET)
    wait_until(lambda: listeners(ctx) == 1, timeout=30, what="the first listener")
    second = start_fleet(**FLEET)
    holder = listener_holder(ctx)
    assert holder is not None and holder.startswith(f"{first.host}:manager:")
    ids = []
    with ctx.db.engine.begin() as connection:
        ids.append(str(enqueue(connection, "acme", "count").job.id))
    wait_until(lambda: completed(ctx, ids[0]), timeout=30)
    assert listeners(ctx) == 1  # the second fleet stands by without a connection
    assert first.stop() == 0
    wait_until(
        lambda: (
            (listener_holder(ctx) or "").startswith(f"{second.host}:manager:")
            and listeners(ctx) == 1
        ),
        timeout=30,
        what="the second listener",
    )
    with ctx.db.engine.begin() as connection:
        ids.append(str(enqueue(connection, "acme", "count", {"n": uuid.uuid4().hex}).job.id))
    wait_until(lambda: completed(ctx, ids[1]), timeout=30)
    assert runs_per_job(ctx) == dict.fromkeys(ids, 1)
