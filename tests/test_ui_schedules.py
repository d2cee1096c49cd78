"""The dashboard's schedules page, in process: the list with each schedule's next fire time,
creating one through the form (bad input named on the page, never a 5xx), pause, resume, run
now and delete through the buttons, each audited with CSRF required; tenant walls."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from fastapi import FastAPI
from sqlalchemy import text

from app.services.context import Context
from tests.test_ui_jobs import Browser, form_of, parse, rows

NIGHTLY = {"name": "nightly report", "cron": "30 2 * * *", "timezone": "Europe/Berlin",
           "task": "noop", "queue": "reports", "priority": "2", "payload": '{"report": "sales"}',
           "misfire_policy": "skip"}  # fmt: skip


@pytest.fixture
def browse(app: FastAPI, make_key: Callable[..., str]) -> Callable[..., Browser]:
    def signed_in(tenant: str = "acme", scope: str = "producer") -> Browser:
        return Browser(app, make_key(tenant, scope))

    return signed_in


def sql(ctx: Context, statement: str, **params: Any) -> Any:
    with ctx.db.transaction() as session:
        return session.execute(text(statement), params)


def schedule_row(ctx: Context, name: str) -> Any:
    return sql(ctx, "SELECT * FROM schedules WHERE name = :name", name=name).one_or_none()


def test_create_through_the_form_then_pause_resume_run_and_delete_each_audited(
    ctx: Context, browse: Callable[..., Browser]
) -> None:
    user = browse()
    empty = user.page("/ui/schedules")
    assert rows(empty, "schedules", "data-schedule-id") == []
    assert 'href="/ui/schedules"' in user.get("/ui/jobs").text  # in the navigation
    fields = form_of(empty, "/ui/schedules")
    assert fields["timezone"] == "UTC" and fields["misfire_policy"] == "run_latest"
    sql(ctx, "TRUNCATE audit_events")

    # Without its CSRF token the form is refused and nothing is made.
    forged = user.post("/ui/schedules", NIGHTLY, csrf=False)
    assert forged.status_code == 403 and schedule_row(ctx, NIGHTLY["name"]) is None

    created = user.post("/ui/schedules", NIGHTLY)
    page = user.follow(created)
    assert page.testid("flash").text() == "Schedule nightly report created."
    row = schedule_row(ctx, NIGHTLY["name"])
    assert row.cron == "30 2 * * *" and row.queue == "reports" and row.priority == 2
    assert row.payload == {"report": "sales"} and row.misfire_policy == "skip"
    schedule_id = str(row.id)
    assert rows(page, "schedules", "data-schedule-id") == [schedule_id]
    listed = page.find("tr", data_schedule_id=schedule_id)
    next_fire = listed.find(data_col="next-fire").text()
    assert next_fire == row.next_fire_at.strftime("%Y-%m-%d %H:%M:%S UTC")
    assert listed.find(data_col="state").text() == "running"
    assert "Pause" in listed.buttons() and "Run now" in listed.buttons()

    paused = user.follow(user.post(f"/ui/schedules/{schedule_id}/pause"))
    assert paused.testid("flash").text() == "Schedule nightly report paused."
    paused_row = paused.find("tr", data_schedule_id=schedule_id)
    assert paused_row.find(data_col="state").text() == "paused"
    assert paused_row.find(data_col="next-fire").text() == "—"
    assert "Resume" in paused_row.buttons()
    resumed = user.follow(user.post(f"/ui/schedules/{schedule_id}/resume"))
    assert resumed.find("tr", data_schedule_id=schedule_id).find(data_col="state").text() == (
        "running"
    )

    ran = user.post(f"/ui/schedules/{schedule_id}/run")
    assert ran.status_code == 303 and ran.headers["location"].startswith("/ui/jobs/")
    job_id = ran.headers["location"].rsplit("/", 1)[1]
    job = sql(ctx, "SELECT * FROM jobs WHERE id = :id", id=job_id).one()
    assert job.idempotency_key.startswith(f"schedule:{schedule_id}:") and job.queue == "reports"

    deleted = user.follow(user.post(f"/ui/schedules/{schedule_id}/delete"))
    assert "Schedule deleted" in deleted.testid("flash").text()
    assert schedule_row(ctx, NIGHTLY["name"]) is None
    events = sql(ctx, "SELECT action, request_id, target FROM audit_events ORDER BY id").all()
    assert [e.action for e in events] == [
        "schedule.create",
        "schedule.pause",
        "schedule.resume",
        "schedule.run",
        "schedule.delete",
    ]
    assert all(e.request_id and e.target["schedule_id"] == schedule_id for e in events)


@pytest.mark.parametrize(
    ("change", "said"),
    [
        ({"cron": "61 * * * *"}, "cron"),
        ({"cron": "* * * * * *"}, "cron"),
        ({"timezone": "Mars/Olympus"}, "unknown time zone"),
        ({"payload": "{not json"}, "payload: not valid JSON"),
        ({"payload": "[" * 5000}, "payload: not valid JSON"),
        ({"priority": "eleven"}, "priority"),
        ({"name": ""}, "name"),
        ({"name": "a\x00b"}, "name"),
        ({"misfire_policy": "catch_up"}, "misfire_policy"),
    ],
)
def test_bad_forms_are_named_on_the_page_and_keep_what_was_typed(
    ctx: Context, browse: Callable[..., Browser], change: dict[str, str], said: str
) -> None:
    user = browse()
    reply = user.post("/ui/schedules", {**NIGHTLY, **change})
    assert reply.status_code == 422, reply.text
    page = parse(reply)
    assert said in page.testid("schedule-errors").text()
    kept = form_of(page, "/ui/schedules")
    assert kept["task"] == "noop" and kept["queue"] == "reports"
    assert sql(ctx, "SELECT count(*) FROM schedules").scalar() == 0


def test_a_taken_name_and_unknown_ids_are_4xx_pages(
    ctx: Context, browse: Callable[..., Browser]
) -> None:
    user = browse()
    user.post("/ui/schedules", NIGHTLY)
    again = user.post("/ui/schedules", NIGHTLY)
    assert again.status_code == 422 and "already has a schedule" in again.text
    for target in ("not-a-uuid", "00000000-0000-0000-0000-000000000000"):
        for action in ("pause", "resume", "run", "delete"):
            assert user.post(f"/ui/schedules/{target}/{action}").status_code == 404
    assert user.get("/ui/schedules", cursor="!!!").status_code == 200


def test_one_tenant_never_sees_nor_touches_another_tenants_schedules(
    ctx: Context, browse: Callable[..., Browser]
) -> None:
    acme, globex = browse("acme"), browse("globex")
    globex.post("/ui/schedules", NIGHTLY)
    theirs = str(schedule_row(ctx, NIGHTLY["name"]).id)
    page = acme.page("/ui/schedules")
    assert rows(page, "schedules", "data-schedule-id") == []
    assert theirs not in acme.get("/ui/schedules").text
    for action in ("pause", "resume", "run", "delete"):
        assert acme.post(f"/ui/schedules/{theirs}/{action}").status_code == 404
    row = schedule_row(ctx, NIGHTLY["name"])
    assert row.enabled and sql(ctx, "SELECT count(*) FROM jobs").scalar() == 0
    # The same name is theirs alone: acme may use it too. An admin sees both, with tenants.
    assert acme.post("/ui/schedules", NIGHTLY).status_code == 303
    admin = browse("ops", "admin")
    listed = admin.page("/ui/schedules")
    assert len(rows(listed, "schedules", "data-schedule-id")) == 2
    assert {"acme", "globex"} <= set(listed.testid("schedules").text().split())
