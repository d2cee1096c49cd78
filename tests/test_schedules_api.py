"""Schedules through the API, in process, and the schedules duty called through run_once on a
fake clock: creating, reading (next fire times, latest jobs), changing, pausing, resuming,
deleting and running one now, each audited; problems for bad input; tenant walls; fires that
make jobs like the API's, once per fire time however many runners, and misfires."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from app.domain.schedules import key_range
from app.main import create_app
from app.services.context import Context
from app.services.maintenance import DUTY_COUNT, DutyRunner, Schedules, all_duties
from app.settings import Settings
from app.store.schedules import RECENT_JOBS_SQL

NIGHTLY = {"name": "nightly report", "cron": "30 2 * * *", "timezone": "Europe/Berlin",
           "task": "noop", "payload": {"report": "sales"}}  # fmt: skip
ZONE = ZoneInfo("Europe/Berlin")
DEEP: Any = []
for _ in range(80):
    DEEP = [DEEP]


def sql(ctx: Context, statement: str, **params: Any) -> Any:
    with ctx.db.transaction() as session:
        return session.execute(text(statement), params)


def create(client: TestClient, headers: dict[str, str], **fields: Any) -> dict[str, Any]:
    reply = client.post("/schedules", json={**NIGHTLY, **fields}, headers=headers)
    assert reply.status_code == 201, reply.text
    return dict(reply.json())


def schedule_jobs(ctx: Context, schedule_id: str) -> list[Any]:
    return list(
        sql(
            ctx,
            "SELECT * FROM jobs WHERE idempotency_key LIKE :prefix ORDER BY idempotency_key",
            prefix=f"schedule:{schedule_id}:%",
        ).all()
    )


def audit_events(ctx: Context) -> list[tuple[str, dict[str, Any]]]:
    rows = sql(ctx, "SELECT action, target FROM audit_events WHERE actor = 'key' ORDER BY id")
    return [(row.action, row.target) for row in rows]


def fire(ctx: Context, now: datetime) -> int:
    return Schedules(ctx).run_once(now.timestamp())


def next_fire_at(ctx: Context, schedule_id: str) -> datetime:
    value: datetime = sql(
        ctx, "SELECT next_fire_at FROM schedules WHERE id = :id", id=schedule_id
    ).scalar_one()
    return value


@pytest.fixture
def seconds_client(settings: Settings, ctx: Context) -> Any:
    """An API that takes cron expressions with seconds (SCHEDULE_SECONDS_FIELD)."""
    app = create_app(settings.model_copy(update={"schedule_seconds_field": True}))
    with TestClient(app) as client:
        yield client


def test_create_read_list_change_pause_resume_delete_each_audited(
    client: TestClient, ctx: Context, producer: dict[str, str]
) -> None:
    sql(ctx, "TRUNCATE audit_events")
    before = datetime.now(UTC)
    created = create(client, producer, max_retries=1)
    assert created["tenant"] == "acme" and created["enabled"] is True
    assert created["misfire_policy"] == "run_latest" and created["max_retries"] == 1
    first = datetime.fromisoformat(created["next_fire_at"])
    assert before < first <= before + timedelta(days=1, hours=1)
    assert first.astimezone(ZONE).strftime("%H:%M") in ("02:30", "03:00")
    schedule_id = created["id"]

    detail = client.get(f"/schedules/{schedule_id}", headers=producer, params={"upcoming": 3})
    assert detail.status_code == 200
    times = [datetime.fromisoformat(t) for t in detail.json()["upcoming"]]
    assert len(times) == 3 and times[0] == first and times[0] < times[1] < times[2]
    assert detail.json()["recent_jobs"] == []
    listed = client.get("/schedules", headers=producer).json()
    assert [item["id"] for item in listed["items"]] == [schedule_id]

    taken = client.post("/schedules", json=NIGHTLY, headers=producer)
    assert taken.status_code == 409 and taken.json()["code"] == "schedule-name-taken"

    changed = client.patch(
        f"/schedules/{schedule_id}",
        json={"cron": "@hourly", "timezone": "UTC", "priority": 5, "max_retries": None},
        headers=producer,
    )
    assert changed.status_code == 200, changed.text
    body = changed.json()
    assert body["cron"] == "@hourly" and body["priority"] == 5 and body["max_retries"] is None
    hourly = datetime.fromisoformat(body["next_fire_at"])
    assert (
        hourly.minute == 0
        and hourly.second == 0
        and hourly - datetime.now(UTC) <= timedelta(hours=1)
    )
    # A template change keeps the next fire time.
    renamed = client.patch(f"/schedules/{schedule_id}", json={"name": "hourly"}, headers=producer)
    assert renamed.json()["next_fire_at"] == body["next_fire_at"]

    paused = client.post(f"/schedules/{schedule_id}/pause", headers=producer).json()
    assert paused["enabled"] is False and paused["next_fire_at"] is None
    assert client.get(f"/schedules/{schedule_id}", headers=producer).json()["upcoming"] == []
    again = client.post(f"/schedules/{schedule_id}/pause", headers=producer)
    assert again.status_code == 200  # nothing changes, nothing is recorded
    resumed = client.post(f"/schedules/{schedule_id}/resume", headers=producer).json()
    assert resumed["enabled"] is True and resumed["next_fire_at"] is not None

    assert client.delete(f"/schedules/{schedule_id}", headers=producer).status_code == 204
    gone = client.get(f"/schedules/{schedule_id}", headers=producer)
    assert gone.status_code == 404 and gone.json()["code"] == "schedule-not-found"

    events = audit_events(ctx)
    assert [action for action, _ in events] == [
        "schedule.create",
        "schedule.update",
        "schedule.update",
        "schedule.pause",
        "schedule.resume",
        "schedule.delete",
    ]
    assert all(t["schedule_id"] == schedule_id and t["tenant"] == "acme" for _, t in events)
    assert events[1][1]["changed"] == ["cron", "max_retries", "priority", "timezone"]


@pytest.mark.parametrize(
    ("fields", "where"),
    [
        ({"cron": "61 * * * *"}, "cron"),
        ({"cron": "0 0 31 2 *"}, "cron"),
        ({"cron": "* * * * * *"}, "cron"),  # seconds: not without SCHEDULE_SECONDS_FIELD
        ({"cron": "@reboot"}, "cron"),
        ({"cron": "R * * * *"}, "cron"),
        ({"cron": "\u0000"}, "cron"),
        ({"timezone": "Mars/Olympus"}, "timezone"),
        ({"timezone": "localtime"}, "timezone"),
        ({"name": ""}, "name"),
        ({"name": "a\u0000b"}, "name"),
        ({"task": "not a task name"}, "task"),
        ({"priority": 10}, "priority"),
        ({"misfire_policy": "catch_up"}, "misfire_policy"),
        ({"payload": DEEP}, "payload"),
        # Stored by jsonb as 10000000000000000000, which no job of it could carry.
        ({"payload": {"n": 1e19}}, "payload"),
        ({"unknown": 1}, "unknown"),
    ],
)
def test_bad_input_is_a_422_problem_naming_the_field(
    client: TestClient, producer: dict[str, str], fields: dict[str, Any], where: str
) -> None:
    reply = client.post("/schedules", json={**NIGHTLY, **fields}, headers=producer)
    assert reply.status_code == 422, reply.text
    assert reply.headers["content-type"] == "application/problem+json"
    assert any(where in [str(p) for p in e["loc"]] for e in reply.json()["errors"]), reply.json()


def test_bad_changes_are_422_and_change_nothing(
    client: TestClient, ctx: Context, producer: dict[str, str]
) -> None:
    schedule_id = create(client, producer)["id"]
    other = create(client, producer, name="other")["id"]
    for body in ({}, {"cron": None}, {"name": None}, {"cron": "nope"}, {"timezone": "Nowhere"}):
        reply = client.patch(f"/schedules/{schedule_id}", json=body, headers=producer)
        assert reply.status_code == 422, (body, reply.text)
    taken = client.patch(f"/schedules/{other}", json={"name": NIGHTLY["name"]}, headers=producer)
    assert taken.status_code == 409
    assert client.get(f"/schedules/{other}", headers=producer).json()["name"] == "other"
    assert client.get(f"/schedules/{schedule_id}", headers=producer).json()["cron"] == "30 2 * * *"
    for bad in ("not-a-uuid", "0" * 40):
        assert client.get(f"/schedules/{bad}", headers=producer).status_code == 422
    assert client.get("/schedules", params={"cursor": "!!"}, headers=producer).status_code == 422
    assert client.get("/schedules", params={"cursor": "abc"}, headers=producer).status_code == 422


def test_another_tenants_schedule_is_unknown_and_untouched(
    client: TestClient,
    ctx: Context,
    producer: dict[str, str],
    admin: dict[str, str],
    make_key: Callable[..., str],
) -> None:
    theirs = create(client, producer)
    schedule_id = theirs["id"]
    globex = {"Authorization": f"Bearer {make_key('globex', 'producer')}"}
    assert client.get("/schedules", headers=globex).json()["items"] == []
    assert client.get(f"/schedules/{schedule_id}", headers=globex).status_code == 404
    for method, path, body in (
        ("PATCH", "", {"priority": 9}),
        ("POST", "/pause", None),
        ("POST", "/resume", None),
        ("POST", "/run", None),
        ("DELETE", "", None),
    ):
        reply = client.request(method, f"/schedules/{schedule_id}{path}", json=body, headers=globex)
        assert reply.status_code == 404, (method, path, reply.text)
    after = client.get(f"/schedules/{schedule_id}", headers=producer).json()
    assert after["priority"] == 0 and after["enabled"] is True
    assert schedule_jobs(ctx, schedule_id) == []
    # The same name is free in another tenant; an admin sees both tenants' schedules.
    create(client, globex)
    listed = client.get("/schedules", headers=admin).json()["items"]
    assert sorted(item["tenant"] for item in listed) == ["acme", "globex"]
    worker = {"Authorization": f"Bearer {make_key('acme', 'worker')}"}
    assert client.get("/schedules", headers=worker).status_code == 403


def test_run_now_makes_one_job_that_reaches_redis_and_shows_as_manual(
    client: TestClient, ctx: Context, producer: dict[str, str]
) -> None:
    schedule_id = create(client, producer, queue="reports", priority=3, enabled=False)["id"]
    sql(ctx, "TRUNCATE audit_events")
    reply = client.post(f"/schedules/{schedule_id}/run", headers=producer)
    assert reply.status_code == 201, reply.text
    job = reply.json()
    assert job["status"] == "queued" and job["queue"] == "reports" and job["priority"] == 3
    assert job["payload"] == {"report": "sales"} and job["tenant"] == "acme"
    assert job["idempotency_key"].startswith(f"schedule:{schedule_id}:")
    assert ":manual:" in job["idempotency_key"]
    ready = ctx.redis.client.lrange(ctx.keys.ready("reports", 3, "acme"), 0, -1)
    assert [i.decode() for i in ready] == [job["id"]]
    second = client.post(f"/schedules/{schedule_id}/run", headers=producer).json()
    recent = client.get(f"/schedules/{schedule_id}", headers=producer).json()["recent_jobs"]
    assert [j["id"] for j in recent] == [second["id"], job["id"]]
    assert all(j["manual"] and j["fire_time"] is None for j in recent)
    assert [action for action, _ in audit_events(ctx)] == ["schedule.run", "schedule.run"]
    assert audit_events(ctx)[0][1]["job_ids"] == [job["id"]]


def test_a_fire_makes_a_job_like_a_submit_and_moves_the_schedule_on(
    settings: Settings, client: TestClient, ctx: Context, producer: dict[str, str]
) -> None:
    schedule_id = create(
        client, producer, cron="*/5 * * * *", timezone="UTC", timeout_seconds=10**9
    )["id"]
    due = next_fire_at(ctx, schedule_id)
    assert fire(ctx, due - timedelta(seconds=1)) == 0
    assert fire(ctx, due + timedelta(seconds=2)) == 1
    (job,) = schedule_jobs(ctx, schedule_id)
    assert job.idempotency_key == f"schedule:{schedule_id}:{due.isoformat()}"
    assert job.status == "queued" and job.task == "noop" and job.payload == {"report": "sales"}
    # The server's defaults and limits, as for a job submitted through the API.
    assert job.max_retries == settings.default_max_retries
    assert job.timeout_seconds == settings.max_timeout_seconds
    ready = ctx.redis.client.lrange(ctx.keys.ready("default", 0, "acme"), 0, -1)
    assert [i.decode() for i in ready] == [str(job.id)]
    assert next_fire_at(ctx, schedule_id) == due + timedelta(minutes=5)
    # Running the same round again makes nothing: the schedule moved on.
    assert fire(ctx, due + timedelta(seconds=3)) == 0
    detail = client.get(f"/schedules/{schedule_id}", headers=producer).json()
    assert datetime.fromisoformat(detail["last_fired_at"]) == due
    (recent,) = detail["recent_jobs"]
    assert recent["id"] == str(job.id) and not recent["manual"]
    assert datetime.fromisoformat(recent["fire_time"]) == due


@pytest.mark.parametrize(("policy", "jobs"), [("run_latest", 1), ("skip", 0)])
def test_ten_minutes_down_run_latest_makes_one_job_skip_none(
    client: TestClient, ctx: Context, producer: dict[str, str], policy: str, jobs: int
) -> None:
    schedule_id = create(client, producer, cron="* * * * *", timezone="UTC", misfire_policy=policy)[
        "id"
    ]
    due = next_fire_at(ctx, schedule_id)
    back = due + timedelta(minutes=9, seconds=45)  # ten fire times passed, none within grace
    assert fire(ctx, back) == jobs
    made = schedule_jobs(ctx, schedule_id)
    assert len(made) == jobs
    if jobs:
        assert made[0].idempotency_key.endswith((due + timedelta(minutes=9)).isoformat())
    assert next_fire_at(ctx, schedule_id) == due + timedelta(minutes=10)
    assert fire(ctx, back + timedelta(seconds=5)) == 0


def test_a_paused_schedule_does_not_fire_and_resumes_from_now(
    client: TestClient, ctx: Context, producer: dict[str, str]
) -> None:
    schedule_id = create(client, producer, cron="* * * * *", timezone="UTC")["id"]
    due = next_fire_at(ctx, schedule_id)
    client.post(f"/schedules/{schedule_id}/pause", headers=producer)
    assert fire(ctx, due + timedelta(seconds=1)) == 0
    client.post(f"/schedules/{schedule_id}/resume", headers=producer)
    assert next_fire_at(ctx, schedule_id) >= due


def test_runners_at_once_make_one_job_per_fire_time(
    seconds_client: TestClient, ctx: Context, make_key: Callable[..., str]
) -> None:
    headers = {"Authorization": f"Bearer {make_key('acme', 'producer')}"}
    ids = [
        create(seconds_client, headers, name=f"s{i}", cron="* * * * * *", timezone="UTC")["id"]
        for i in range(30)
    ]
    # Each schedule's first fire time, as creating it set it: thirty creations may span more
    # than a second on a busy machine.
    initial = {i: next_fire_at(ctx, i) for i in ids}
    now = max(initial.values()) + timedelta(seconds=10)
    barrier = threading.Barrier(4)
    made: list[int] = []

    def runner() -> None:
        barrier.wait()
        made.append(Schedules(ctx).run_once(now.timestamp()))

    threads = [threading.Thread(target=runner) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    keys = [row.idempotency_key for row in sql(ctx, "SELECT idempotency_key FROM jobs").all()]
    assert len(keys) == len(set(keys)) == sum(made)
    for schedule_id in ids:
        fired = [k for k in keys if k.startswith(f"schedule:{schedule_id}:")]
        first = next_fire_at(ctx, schedule_id) - timedelta(seconds=len(fired))
        assert first == initial[schedule_id]
        assert next_fire_at(ctx, schedule_id) == now + timedelta(seconds=1)
        assert len(fired) == int((now - first).total_seconds()) + 1


def test_a_producers_own_job_holding_a_fire_key_stands_for_that_fire(
    client: TestClient, ctx: Context, producer: dict[str, str]
) -> None:
    schedule_id = create(client, producer, cron="* * * * *", timezone="UTC")["id"]
    due = next_fire_at(ctx, schedule_id)
    key = f"schedule:{schedule_id}:{due.isoformat()}"
    own = client.post("/jobs", json={"task": "echo", "idempotency_key": key}, headers=producer)
    assert own.status_code == 201
    assert fire(ctx, due) == 0
    (job,) = schedule_jobs(ctx, schedule_id)
    assert job.task == "echo" and next_fire_at(ctx, schedule_id) > due


def test_a_schedule_that_cannot_fire_is_paused_not_retried_every_round(
    client: TestClient, ctx: Context, producer: dict[str, str]
) -> None:
    schedule_id = create(client, producer, cron="* * * * *", timezone="UTC")["id"]
    due = next_fire_at(ctx, schedule_id)
    sql(ctx, "UPDATE schedules SET timezone = 'Nowhere/Else' WHERE id = :id", id=schedule_id)
    assert fire(ctx, due) == 0
    enabled = sql(ctx, "SELECT enabled FROM schedules WHERE id = :id", id=schedule_id).scalar()
    assert enabled is False
    assert schedule_jobs(ctx, schedule_id) == []


def test_the_schedules_duty_runs_with_the_others_under_a_short_lock(ctx: Context) -> None:
    duties = {duty.name: duty for duty in all_duties(ctx)}
    assert len(duties) == DUTY_COUNT
    schedules = duties["schedules"]
    assert schedules.interval == ctx.settings.schedule_interval_seconds
    # Its lock outlives a round by far, and a dead holder by little: within the grace.
    runner = DutyRunner(ctx, schedules, "test", threading.Event())
    assert runner.lock_ttl < ctx.settings.schedule_misfire_grace_seconds
    assert DutyRunner(ctx, duties["bulk"], "test", threading.Event()).lock_ttl == 30.0


def test_a_schedules_latest_jobs_are_read_through_its_index(ctx: Context) -> None:
    schedule_id = uuid.uuid4()
    low, high = key_range(schedule_id)
    with ctx.db.transaction() as session:
        session.execute(text("SET LOCAL enable_seqscan = off"))
        plan = session.execute(
            text("EXPLAIN " + str(RECENT_JOBS_SQL)),
            {"tenant": "acme", "low": low, "high": high, "limit": 10},
        ).scalars()
        shown = "\n".join(plan)
    assert "ix_jobs_schedule_key" in shown and "Sort" not in shown, shown
