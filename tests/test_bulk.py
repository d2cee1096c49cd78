"""Bulk operations: a count first, then bounded batches (one transaction each) by a duty that
any process may run, surviving restarts; a producer's operation touches its tenant's jobs
only; a job that changed state meanwhile is skipped and counted."""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

from app.domain.bulk import BulkAction
from app.domain.filters import JobQuery
from app.domain.states import JobStatus
from app.services import bulk
from app.services.auth import Principal, Scope
from app.services.context import Context
from app.services.maintenance import BulkRunner, all_duties
from app.settings import Settings
from tests.fleet_support import burst, job_row, runs_per_job
from tests.helpers import HEAVY, wait_until

ACME = Principal(uuid.uuid4(), "acme", frozenset({Scope.PRODUCER}))
OPS = Principal(uuid.uuid4(), "ops", frozenset({Scope.ADMIN}))


def seed(
    ctx: Context,
    count: int,
    status: str = "failed",
    tenant: str = "acme",
    queue: str = "bulk",
    task: str = "count",
) -> list[str]:
    """`count` jobs in `status`, inserted in one statement; their ids."""
    with ctx.db.transaction() as session:
        rows = session.execute(
            text(
                """
                INSERT INTO jobs (id, tenant, queue, task, status, max_retries, timeout_seconds,
                                  attempts, last_error, finished_at)
                SELECT gen_random_uuid(), :tenant, :queue, :task, :status, 0, 60,
                       CASE WHEN :status = 'failed' THEN 1 ELSE 0 END,
                       CASE WHEN :status = 'failed' THEN 'boom' END,
                       CASE WHEN :status IN ('queued', 'scheduled') THEN NULL ELSE now() END
                  FROM generate_series(1, :count)
                RETURNING id
                """
            ),
            {"tenant": tenant, "queue": queue, "task": task, "status": status, "count": count},
        )
        return [str(row.id) for row in rows]


def by_status(ctx: Context, **where: str) -> Counter[str]:
    clauses = " AND ".join(f"{name} = :{name}" for name in where) or "true"
    with ctx.db.transaction() as session:
        rows = session.execute(
            text(f"SELECT status, count(*) FROM jobs WHERE {clauses} GROUP BY status"), where
        ).all()
    return Counter({str(status): int(count) for status, count in rows})


def transactions_of(ctx: Context, ids: list[str]) -> Counter[Any]:
    """How many of the jobs each transaction changed: a transaction's now() is one instant, so
    the jobs one batch changed share their updated_at, and no two batches share one."""
    with ctx.db.transaction() as session:
        stamps = session.scalars(
            text("SELECT updated_at FROM jobs WHERE id = ANY(CAST(:ids AS uuid[]))"), {"ids": ids}
        ).all()
    return Counter(stamps)


def with_batches(settings: Settings, size: int) -> Context:
    return Context(settings.model_copy(update={"bulk_batch_size": size}))


def test_the_bulk_duty_is_one_of_the_periodic_duties(ctx: Context) -> None:
    assert "bulk" in {duty.name for duty in all_duties(ctx)}


@HEAVY
@pytest.mark.usefixtures("untraced")
def test_a_bulk_replay_of_10000_dead_jobs_counts_first_runs_in_batches_and_every_job_runs(
    client: TestClient, ctx: Context, settings: Settings, producer: dict[str, str]
) -> None:
    dead = seed(ctx, 10_000)
    seed(ctx, 30, queue="other")  # another queue
    seed(ctx, 30, tenant="globex")  # another tenant
    seed(ctx, 30, status="completed")  # not in the dead-letter queue
    request = {"action": "replay", "filter": {"queue": "bulk"}}

    preview = client.post("/bulk", json={**request, "dry_run": True}, headers=producer)
    assert (preview.status_code, preview.json()) == (200, {"action": "replay", "count": 10_000})
    assert by_status(ctx, queue="bulk", tenant="acme")["failed"] == 10_000  # a dry run

    started = client.post("/bulk", json=request, headers=producer)
    assert started.status_code == 202
    operation = started.json()
    assert (operation["state"], operation["total"], operation["done"]) == ("pending", 10_000, 0)
    assert operation["filter"] == {"tenant": "acme", "queue": "bulk"}

    # The duty, four batches of 500 a round: progress shows between rounds.
    runner = BulkRunner(ctx, batches=4)
    progress = []
    while True:
        reached = runner.run_once(time.time())
        shown = client.get(f"/bulk/{operation['id']}", headers=producer).json()
        progress.append((shown["state"], shown["done"]))
        if reached == 0 or shown["state"] == "done":
            break
    assert progress == [("running", n) for n in range(2000, 10_000, 2000)] + [("done", 10_000)]
    assert shown["skipped"] == 0 and shown["finished_at"] is not None

    batches = transactions_of(ctx, dead)
    assert len(batches) == 20 and set(batches.values()) == {500}
    assert by_status(ctx, queue="bulk", tenant="acme") == {"queued": 10_000, "completed": 30}
    assert by_status(ctx, queue="other")["failed"] == 30
    assert by_status(ctx, tenant="globex")["failed"] == 30
    ready = ctx.redis.client.llen(ctx.keys.ready("bulk", 0, "acme"))
    assert ready == 10_000  # announced after each batch's commit

    assert burst(settings, processes=2, threads=4, queues="bulk", timeout=300) == 0
    assert by_status(ctx, queue="bulk", tenant="acme") == {"completed": 10_030}
    assert runs_per_job(ctx) == dict.fromkeys(dead, 1)


def test_an_operation_survives_a_restart(settings: Settings, ctx: Context) -> None:
    jobs = sorted(seed(ctx, 45, status="cancelled"))
    first = with_batches(settings, 10)
    try:
        operation = bulk.start(first, ACME, BulkAction.RETRY, JobQuery(tenant=None))
        assert operation.total == 45
        assert BulkRunner(first, batches=2).run_once(time.time()) == 20
    finally:
        first.close()  # the API or fleet that ran it is gone
    halfway = bulk.get(ctx, ACME, operation.id)
    assert (halfway.state, halfway.done) == ("running", 20)

    second = with_batches(settings, 10)
    try:
        assert BulkRunner(second).run_once(time.time()) == 25
    finally:
        second.close()
    finished = bulk.get(ctx, ACME, operation.id)
    assert (finished.state, finished.done, finished.skipped) == ("done", 45, 0)
    # Each job was requeued once, in batches of at most 10, in id order.
    assert sorted(transactions_of(ctx, jobs).values()) == [5, 10, 10, 10, 10]
    assert by_status(ctx) == {"queued": 45}


def test_no_batch_holds_more_than_the_batch_size(settings: Settings, ctx: Context) -> None:
    waiting = seed(ctx, 60, status="queued") + seed(ctx, 40, status="scheduled")
    small = with_batches(settings, 7)
    try:
        operation = bulk.start(small, OPS, BulkAction.CANCEL, JobQuery(tenant="acme"))
        steps = []
        while (reached := bulk.run_batch(small, operation.id)) is not None:
            steps.append(reached)
    finally:
        small.close()
    assert steps == [7] * 14 + [2]
    assert max(transactions_of(ctx, waiting).values()) == 7
    assert by_status(ctx) == {"cancelled": 100}
    assert bulk.get(ctx, OPS, operation.id).done == 100


def test_a_producers_operation_never_touches_another_tenants_jobs(
    client: TestClient,
    ctx: Context,
    producer: dict[str, str],
    admin: dict[str, str],
    make_key: Callable[..., str],
) -> None:
    ours = seed(ctx, 20, status="completed")
    theirs = seed(ctx, 20, status="completed", tenant="globex")
    globex = {"Authorization": f"Bearer {make_key('globex', 'producer')}"}
    request = {"action": "delete", "filter": {"tenant": "globex"}}

    count = client.post("/bulk", json={**request, "dry_run": True}, headers=producer).json()
    assert count["count"] == 20  # its own 20, not globex's
    operation = client.post("/bulk", json=request, headers=producer).json()
    assert operation["filter"] == {"tenant": "acme"} and operation["owner"] == "acme"
    BulkRunner(ctx).run_once(time.time())
    assert by_status(ctx, tenant="acme") == {}
    assert by_status(ctx, tenant="globex") == {"completed": 20}
    assert all(job_row(ctx, job_id).tenant == "globex" for job_id in theirs)
    assert not set(ours) & set(theirs)

    # Another tenant's key cannot see or stop it; an admin sees it.
    path = f"/bulk/{operation['id']}"
    assert client.get(path, headers=globex).status_code == 404
    assert client.post(f"{path}/cancel", headers=globex).status_code == 404
    assert client.get("/bulk", headers=globex).json()["items"] == []
    assert client.get(path, headers=admin).json()["done"] == 20
    # An admin's operation may name one tenant, and then touches only that one.
    mine = {"action": "delete", "filter": {"tenant": "globex", "status": "completed"}}
    assert client.post("/bulk", json=mine, headers=admin).json()["total"] == 20
    seed(ctx, 5, status="completed", tenant="initech")
    BulkRunner(ctx).run_once(time.time())
    assert by_status(ctx) == {"completed": 5}
    # With no tenant, every tenant's.
    everyone = client.post("/bulk", json={"action": "delete"}, headers=admin).json()
    assert (everyone["filter"], everyone["total"]) == ({}, 5)
    BulkRunner(ctx).run_once(time.time())
    assert by_status(ctx) == {}
    assert client.get(f"/bulk/{everyone['id']}", headers=admin).json()["state"] == "done"


def test_a_job_that_changed_state_meanwhile_is_skipped_and_counted(
    settings: Settings, ctx: Context
) -> None:
    first, second, third = sorted(seed(ctx, 3))
    operation = bulk.start(ctx, ACME, BulkAction.REPLAY, JobQuery(tenant=None))
    other = create_engine(settings.database_url, poolclass=NullPool)
    try:
        with other.connect() as connection:
            # Another caller replays the second job, and has not committed yet.
            connection.execute(
                text("UPDATE jobs SET status = 'queued' WHERE id = :id"), {"id": second}
            )
            batch = threading.Thread(target=bulk.run_batch, args=(ctx, operation.id))
            batch.start()
            wait_until(lambda: waiting_for_a_lock(ctx), timeout=10)
            connection.commit()
            batch.join(10)
    finally:
        other.dispose()
    done = bulk.get(ctx, ACME, operation.id)
    assert (done.state, done.done, done.skipped) == ("done", 2, 1)
    assert [job_row(ctx, j).attempts for j in (first, second, third)] == [0, 1, 0]


def waiting_for_a_lock(ctx: Context) -> bool:
    with ctx.db.transaction() as session:
        return bool(
            session.scalar(
                text(
                    "SELECT count(*) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND wait_event_type = 'Lock'"
                )
            )
        )


def test_cancel_stops_an_operation_between_batches(
    client: TestClient, ctx: Context, settings: Settings, producer: dict[str, str]
) -> None:
    seed(ctx, 30)
    operation = client.post("/bulk", json={"action": "retry"}, headers=producer).json()
    small = with_batches(settings, 10)
    try:
        assert bulk.run_batch(small, uuid.UUID(operation["id"])) == 10
        reply = client.post(f"/bulk/{operation['id']}/cancel", headers=producer)
        assert (reply.status_code, reply.json()["state"], reply.json()["done"]) == (
            200,
            "cancelled",
            10,
        )
        assert bulk.run_batch(small, uuid.UUID(operation["id"])) is None
        assert BulkRunner(small).run_once(time.time()) == 0
    finally:
        small.close()
    assert by_status(ctx) == {"queued": 10, "failed": 20}
    again = client.post(f"/bulk/{operation['id']}/cancel", headers=producer)
    assert (again.status_code, again.json()["code"]) == (409, "bulk-operation-ended")


def test_what_a_bulk_request_may_ask(
    client: TestClient, ctx: Context, producer: dict[str, str]
) -> None:
    running = seed(ctx, 2, status="processing")
    # An action refuses a status it cannot move: a 422 that names the field.
    reply = client.post(
        "/bulk", json={"action": "replay", "filter": {"status": "queued"}}, headers=producer
    )
    assert (reply.status_code, reply.json()["errors"][0]["loc"]) == (
        422,
        ["body", "filter", "status"],
    )
    assert bulk.preview(ctx, ACME, BulkAction.DELETE, JobQuery(tenant=None)) == 0
    for bad in (
        {"action": "explode"},
        {"action": "delete", "filter": {"colour": "red"}},
        {"action": "delete", "filter": {"queue": "no spaces"}},
    ):
        assert client.post("/bulk", json=bad, headers=producer).status_code == 422
    # Nothing matches: done at once. Running jobs are never deleted.
    empty = client.post("/bulk", json={"action": "delete"}, headers=producer).json()
    assert (empty["state"], empty["total"], empty["finished_at"] is not None) == ("done", 0, True)
    assert [job_row(ctx, j).status for j in running] == [JobStatus.PROCESSING] * 2
    assert client.get(f"/bulk/{uuid.uuid4()}", headers=producer).status_code == 404

    # Newest first, by keyset pages.
    for _ in range(2):
        client.post("/bulk", json={"action": "cancel"}, headers=producer)
    first = client.get("/bulk", params={"limit": 2}, headers=producer).json()
    rest = client.get(
        "/bulk", params={"limit": 2, "cursor": first["next_cursor"]}, headers=producer
    ).json()
    ids = [op["id"] for op in first["items"] + rest["items"]]
    assert len(ids) == 3 and ids == sorted(ids, reverse=True) and rest["next_cursor"] is None
    assert ids[-1] == empty["id"]
    assert client.get("/bulk", params={"state": "pending"}, headers=producer).json()["items"] == []
    assert client.get("/bulk", params={"cursor": "bm9wZQ"}, headers=producer).status_code == 422
