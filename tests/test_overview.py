"""The overview's figures for a seeded history (counted by the stats duty's rounds), the stats
duty's rounds themselves, and the answer to "why is this job waiting?" for each cause."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text
from sqlalchemy.orm import Session

from app.dispatch import fleet, ready
from app.dispatch.ready import Place
from app.domain.errors import Forbidden, InvalidTransition, JobNotFound
from app.domain.overview import QueueOverview, WaitCause
from app.domain.principal import Principal, Scope
from app.domain.schemas import JobCreate
from app.domain.states import JobStatus
from app.services import jobs, overview
from app.services.context import Context
from app.services.fleet_state import beat
from app.services.maintenance import Retention, Stats
from app.store import jobs as job_store
from tests.helpers import LiveFleet

ACME = Principal(uuid.uuid4(), "acme", frozenset({Scope.PRODUCER}))
GLOBEX = Principal(uuid.uuid4(), "globex", frozenset({Scope.PRODUCER}))
ADMIN = Principal(uuid.uuid4(), "ops", frozenset({Scope.ADMIN}))


def add_job(
    session: Session,
    tenant: str,
    queue: str,
    status: str,
    *,
    finished: datetime | None = None,
    run_at: datetime | None = None,
    priority: int = 0,
) -> uuid.UUID:
    job_id: uuid.UUID = session.scalar(
        text(
            "INSERT INTO jobs (tenant, queue, task, status, priority, max_retries, "
            "timeout_seconds, finished_at, run_at) VALUES (:tenant, :queue, 'noop', :status, "
            ":priority, 3, 300, :finished, coalesce(:run_at, now())) RETURNING id"
        ),
        {
            "tenant": tenant,
            "queue": queue,
            "status": status,
            "finished": finished,
            "run_at": run_at,
            "priority": priority,
        },
    )
    return job_id


def stats_rows(ctx: Context) -> list[tuple[datetime, str, str, int, int]]:
    with ctx.db.transaction() as session:
        rows = session.execute(
            text(
                "SELECT minute, queue, tenant, completed, failed FROM job_stats "
                "ORDER BY minute, queue, tenant"
            )
        ).all()
    return [tuple(row) for row in rows]  # type: ignore[misc]


# -- the stats duty ---------------------------------------------------------------------

T = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def test_a_round_counts_each_minute_once_however_often_it_runs(ctx: Context) -> None:
    with ctx.db.transaction() as session:
        for seconds, tenant, status in [
            (5, "acme", "completed"),
            (40, "acme", "completed"),
            (50, "acme", "failed"),
            (65, "globex", "completed"),
            (-2 * 3600, "acme", "completed"),  # before the hour a first round catches up
            (90, "acme", "cancelled"),  # neither completed nor failed
        ]:
            add_job(session, tenant, "mail", status, finished=T + timedelta(seconds=seconds))
    duty = Stats(ctx)
    now = (T + timedelta(minutes=3)).timestamp()
    assert duty.run_once(now) == 4
    expected = [
        (T, "mail", "acme", 2, 1),
        (T + timedelta(minutes=1), "mail", "globex", 1, 0),
    ]
    assert stats_rows(ctx) == expected
    # Again: only the minutes within the look-back are recounted (the globex one), and replaced.
    assert duty.run_once(now) == 1
    assert duty.run_once(now + 1) == 1
    assert stats_rows(ctx) == expected
    # A duty that forgot its place (no mark) counts the last hour again, to the same rows.
    with ctx.db.transaction() as session:
        session.execute(text("DELETE FROM stats_marks"))
    assert duty.run_once(now) == 4
    assert stats_rows(ctx) == expected


def test_rounds_recount_recent_minutes_and_catch_up_after_a_pause(ctx: Context) -> None:
    duty = Stats(ctx)
    with ctx.db.transaction() as session:
        add_job(session, "acme", "mail", "completed", finished=T + timedelta(seconds=10))
    duty.run_once((T + timedelta(seconds=30)).timestamp())
    assert stats_rows(ctx) == [(T, "mail", "acme", 1, 0)]
    # A finish stamped before the last round, committed after it, and one in the minute the
    # round had only begun: the next round recounts the last minutes and finds both.
    with ctx.db.transaction() as session:
        add_job(session, "acme", "mail", "failed", finished=T + timedelta(seconds=20))
        add_job(session, "acme", "mail", "completed", finished=T + timedelta(seconds=45))
    duty.run_once((T + timedelta(seconds=50)).timestamp())
    assert stats_rows(ctx) == [(T, "mail", "acme", 2, 1)]
    # The duty stops for 40 minutes while jobs finish; its next round counts all of them.
    with ctx.db.transaction() as session:
        for minute in (5, 20, 39):
            add_job(session, "acme", "mail", "completed", finished=T + timedelta(minutes=minute))
    duty.run_once((T + timedelta(minutes=40)).timestamp())
    assert [(row[0], row[3]) for row in stats_rows(ctx)] == [
        (T, 2),
        (T + timedelta(minutes=5), 1),
        (T + timedelta(minutes=20), 1),
        (T + timedelta(minutes=39), 1),
    ]


def test_retention_deletes_counts_older_than_their_retention(ctx: Context) -> None:
    with ctx.db.transaction() as session:
        for age in (timedelta(days=3), timedelta(days=2), timedelta(hours=1)):
            session.execute(
                text(
                    "INSERT INTO job_stats (minute, queue, tenant, completed, failed) VALUES "
                    "(date_trunc('minute', now() - :age), 'mail', 'acme', 1, 0)"
                ),
                {"age": age},
            )
    assert ctx.settings.stats_retention_seconds == 86_400
    Retention(ctx).run_once(time.time())
    rows = stats_rows(ctx)
    assert len(rows) == 1 and rows[0][0] > datetime.now(UTC) - timedelta(hours=2)


# -- the overview -----------------------------------------------------------------------


@pytest.fixture
def seeded(ctx: Context) -> datetime:
    """Two tenants' history in queue mail, one tenant's in reports, relative to the database's
    clock; the stats duty has counted it. Returns the database's now."""
    with ctx.db.transaction() as session:
        now = job_store.database_now(session)
        ago = lambda **delta: now - timedelta(**delta)  # noqa: E731
        for minutes in (5, 30, 58):
            add_job(session, "acme", "mail", "completed", finished=ago(minutes=minutes))
        add_job(session, "acme", "mail", "completed", finished=ago(hours=2))  # not this hour
        add_job(session, "acme", "mail", "failed", finished=ago(minutes=10))
        add_job(session, "acme", "mail", "queued", run_at=ago(minutes=5))
        add_job(session, "acme", "mail", "queued", run_at=ago(minutes=1), priority=3)
        add_job(session, "acme", "mail", "scheduled", run_at=now + timedelta(hours=1))
        add_job(session, "acme", "mail", "processing")
        for minutes in (1, 2):
            add_job(session, "globex", "mail", "completed", finished=ago(minutes=minutes))
            add_job(session, "globex", "mail", "failed", finished=ago(minutes=minutes))
        add_job(session, "globex", "mail", "queued", run_at=ago(minutes=20))
        add_job(session, "globex", "reports", "failed", finished=ago(days=3))
    Stats(ctx).run_once(time.time())
    client, keys = ctx.redis.client, ctx.keys
    ready.push(client, keys, Place("mail", 0, "acme"), ["a1", "a2"])
    ready.push(client, keys, Place("mail", 3, "acme"), ["a3"])
    ready.push(client, keys, Place("mail", 0, "globex"), ["g1"])
    fleet.pause(client, keys, "idle")
    return now


def by_queue(queues: list[QueueOverview]) -> dict[str, QueueOverview]:
    return {q.queue: q for q in queues}


def test_the_admin_overview_adds_up_every_tenant(ctx: Context, seeded: datetime) -> None:
    queues = by_queue(overview.overview(ctx, ADMIN))
    assert list(queues) == ["idle", "mail", "reports"]
    mail = queues["mail"]
    assert mail.jobs == {"queued": 3, "scheduled": 1, "processing": 1, "failed": 3}
    assert (mail.completed_last_hour, mail.failed_last_hour) == (5, 3)
    assert mail.failure_rate == pytest.approx(3 / 8)
    assert mail.ready_in_redis == 4 and not mail.paused
    assert mail.oldest_waiting_seconds is not None and mail.oldest_waiting_seconds >= 19 * 60
    reports = queues["reports"]  # a dead letter of days ago: in the DLQ, not in the hour
    assert reports.jobs["failed"] == 1 and reports.completed_last_hour == 0
    assert reports.failure_rate is None and reports.oldest_waiting_seconds is None
    assert queues["idle"].paused and queues["idle"].jobs == dict.fromkeys(queues["idle"].jobs, 0)


def test_a_producer_sees_its_own_tenant_only(ctx: Context, seeded: datetime) -> None:
    queues = by_queue(overview.overview(ctx, ACME))
    assert list(queues) == ["mail"]  # not globex's reports, not the paused idle queue
    mail = queues["mail"]
    assert mail.jobs == {"queued": 2, "scheduled": 1, "processing": 1, "failed": 1}
    assert (mail.completed_last_hour, mail.failed_last_hour) == (3, 1)
    assert mail.failure_rate == pytest.approx(0.25)
    assert mail.ready_in_redis == 3  # its own lists: globex's id is not counted
    assert mail.oldest_waiting_seconds is not None
    assert 4 * 60 <= mail.oldest_waiting_seconds < 19 * 60  # its own oldest, not globex's
    assert [q.jobs for q in overview.overview(ctx, ACME, "acme")] == [mail.jobs]
    with pytest.raises(Forbidden):
        overview.overview(ctx, ACME, "globex")
    # An admin may look at one tenant the same way.
    globex = by_queue(overview.overview(ctx, ADMIN, "globex"))
    assert list(globex) == ["mail", "reports"]
    assert (globex["mail"].completed_last_hour, globex["mail"].failed_last_hour) == (2, 2)
    assert globex["mail"].ready_in_redis == 1


def test_get_overview(client: TestClient, make_key: Callable[..., str], seeded: datetime) -> None:
    acme = {"Authorization": f"Bearer {make_key('acme')}"}
    admin = {"Authorization": f"Bearer {make_key('ops', 'admin')}"}
    (mail,) = client.get("/overview", headers=acme).json()
    assert mail["queue"] == "mail" and mail["completed_last_hour"] == 3
    assert mail["failure_rate"] == pytest.approx(0.25)
    everything = client.get("/overview", headers=admin).json()
    assert [q["queue"] for q in everything] == ["idle", "mail", "reports"]
    one = client.get("/overview", params={"tenant": "globex"}, headers=admin).json()
    assert [q["queue"] for q in one] == ["mail", "reports"]
    refused = client.get("/overview", params={"tenant": "globex"}, headers=acme)
    assert refused.status_code == 403 and refused.json()["code"] == "forbidden"


# -- why is it waiting -------------------------------------------------------------------


def submit(ctx: Context, principal: Principal = ACME, **fields: Any) -> uuid.UUID:
    return jobs.submit(ctx, principal, JobCreate(task="noop", **fields)).record.id


def serve(ctx: Context, *queues: str, state: str = "idle") -> None:
    """A worker process's heartbeat, as a fleet serving `queues` writes it."""
    worker_id = f"test-host:1:{uuid.uuid4().hex[:6]}"
    beat(ctx, worker_id, {"kind": "worker", "worker_id": worker_id, "host": "test-host",
                          "queues": list(queues), "state": state}, ttl=30)  # fmt: skip


def causes(ctx: Context, job_id: uuid.UUID, principal: Principal = ACME) -> list[WaitCause]:
    reason = overview.why_waiting(ctx, principal, job_id)
    assert reason is not None and len(reason.explanations) == len(reason.reasons)
    return reason.reasons


def test_a_paused_queue(ctx: Context) -> None:
    serve(ctx, "mail")
    job_id = submit(ctx, queue="mail")
    assert causes(ctx, job_id) == []  # next, and served: nothing holds it
    fleet.pause(ctx.redis.client, ctx.keys, "mail")
    assert causes(ctx, job_id) == [WaitCause.PAUSED]
    reason = overview.why_waiting(ctx, ACME, job_id)
    assert reason is not None and "'mail' is paused" in reason.explanations[0]


def test_no_live_worker_serves_the_queue(ctx: Context) -> None:
    job_id = submit(ctx, queue="mail")
    assert causes(ctx, job_id) == [WaitCause.NO_WORKER]
    serve(ctx, "reports")  # another queue's worker
    serve(ctx, "mail", state="stopping")  # a worker on its way out takes nothing more
    assert causes(ctx, job_id) == [WaitCause.NO_WORKER]
    serve(ctx, "reports", "mail")
    assert causes(ctx, job_id) == []


def test_a_live_fleets_heartbeat_serves_its_queues(
    ctx: Context, start_fleet: Callable[..., LiveFleet]
) -> None:
    fleet.pause(ctx.redis.client, ctx.keys, "held")  # so that the fleet leaves the job be
    job_id = submit(ctx, queue="held")
    assert causes(ctx, job_id) == [WaitCause.PAUSED, WaitCause.NO_WORKER]
    start_fleet(processes=1, threads=1, queues="held,other")
    assert causes(ctx, job_id) == [WaitCause.PAUSED]
    elsewhere = submit(ctx, queue="unserved")
    assert causes(ctx, elsewhere) == [WaitCause.NO_WORKER]


def test_a_run_at_in_the_future(ctx: Context) -> None:
    serve(ctx, "mail")
    job_id = submit(ctx, queue="mail", delay_seconds=3600)
    reason = overview.why_waiting(ctx, ACME, job_id)
    assert reason is not None and reason.status is JobStatus.SCHEDULED
    assert reason.reasons == [WaitCause.RUN_AT]
    assert reason.run_at is not None
    assert reason.run_at > datetime.now(UTC) + timedelta(minutes=59)
    assert "in 3,5" in reason.explanations[0] or "in 3,6" in reason.explanations[0]


def test_behind_jobs_of_higher_or_equal_priority_ready_before_it(ctx: Context) -> None:
    serve(ctx, "mail")
    first = [submit(ctx, queue="mail") for _ in range(3)]
    mine = submit(ctx, queue="mail")
    submit(ctx, queue="mail")  # after it: not ahead
    submit(ctx, queue="mail", priority=5)  # later, but a higher priority: ahead
    submit(ctx, queue="other")  # another queue
    for _ in range(2):
        submit(ctx, GLOBEX, queue="mail")  # another tenant's, ready before it? no: after
    reason = overview.why_waiting(ctx, ACME, mine)
    assert reason is not None and reason.reasons == [WaitCause.BEHIND]
    assert reason.behind == 4 and reason.behind_exact
    assert causes(ctx, first[0]) == [WaitCause.BEHIND]  # the priority 5 job
    # Another tenant's jobs ahead are counted for an admin, never shown to a producer.
    with ctx.db.transaction() as session:
        add_job(session, "globex", "mail", "queued", run_at=datetime.now(UTC) - timedelta(hours=1))
    admin = overview.why_waiting(ctx, ADMIN, mine)
    assert admin is not None and admin.behind == 5
    again = overview.why_waiting(ctx, ACME, mine)
    assert again is not None and again.behind == 4


def test_an_id_missing_from_redis(ctx: Context) -> None:
    serve(ctx, "mail")
    job_id = submit(ctx, queue="mail")
    assert causes(ctx, job_id) == []
    key = ctx.keys.ready("mail", 0, "acme")
    assert ctx.redis.client.lrem(key, 0, str(job_id)) == 1
    reason = overview.why_waiting(ctx, ACME, job_id)
    assert reason is not None and reason.reasons == [WaitCause.NOT_IN_REDIS]
    assert reason.sweep_after_seconds == ctx.settings.sweep_after_seconds
    assert "reconciler" in reason.explanations[0]


def test_only_waiting_jobs_of_the_keys_tenant_have_an_answer(
    ctx: Context, client: TestClient, make_key: Callable[..., str]
) -> None:
    serve(ctx, "mail")
    job_id = submit(ctx, queue="mail")
    with pytest.raises(JobNotFound):
        overview.why_waiting(ctx, GLOBEX, job_id)
    assert causes(ctx, job_id, ADMIN) == []
    acme = {"Authorization": f"Bearer {make_key('acme')}"}
    globex = {"Authorization": f"Bearer {make_key('globex')}"}
    answer = client.get(f"/jobs/{job_id}/why", headers=acme)
    assert answer.status_code == 200
    assert answer.json()["reasons"] == [] and answer.json()["status"] == "queued"
    assert client.get(f"/jobs/{job_id}/why", headers=globex).json()["code"] == "job-not-found"

    fleet.pause(ctx.redis.client, ctx.keys, "mail")
    paused = client.get(f"/jobs/{job_id}/why", headers=acme).json()
    assert paused["reasons"] == ["paused"] and "paused" in paused["explanations"][0]

    jobs.cancel(ctx, ACME, job_id)
    assert overview.why_waiting(ctx, ACME, job_id) is None
    with pytest.raises(InvalidTransition):
        overview.waiting(ctx, ACME, job_id)
    refused = client.get(f"/jobs/{job_id}/why", headers=acme)
    assert refused.status_code == 409
    assert refused.json()["code"] == "invalid-state"
    assert refused.json()["job_status"] == "cancelled"
    unknown = client.get(f"/jobs/{uuid.uuid4()}/why", headers=acme)
    assert unknown.status_code == 404
