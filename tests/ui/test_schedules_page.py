"""The schedules page in a real Chromium against a live API: a producer creates a schedule
through the form, sees its next fire time, pauses and resumes it, runs it now (landing on the
job it made) and deletes it after the confirm dialog; the API agrees at every step."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime

import pytest
from playwright.sync_api import Page, expect

from tests.browser_support import Api, PageWatch, sign_in, unlabelled_controls

pytestmark = [pytest.mark.live, pytest.mark.browser]


def test_a_producer_creates_pauses_resumes_runs_and_deletes_a_schedule(
    page: Page, api: Api, watch: PageWatch, make_key: Callable[..., str]
) -> None:
    key = make_key("acme", "producer")
    sign_in(page, key, then="/ui/schedules")
    expect(page.get_by_test_id("schedules")).to_contain_text("No schedule yet")
    assert unlabelled_controls(page) == []

    # A bad time zone is named on the page, and what was typed stays.
    form = page.get_by_test_id("schedule-form")
    form.get_by_label("Name").fill("hourly export")
    form.get_by_label("Cron").fill("@hourly")
    form.get_by_label("Time zone").fill("Mars/Olympus")
    form.get_by_label("Task").fill("noop")
    form.get_by_label("Payload (JSON)").fill('{"export": "orders"}')
    watch.allow_status(422)
    form.get_by_role("button", name="Create schedule").click()
    expect(page.get_by_test_id("schedule-errors")).to_contain_text("unknown time zone")
    expect(form.get_by_label("Name")).to_have_value("hourly export")

    form.get_by_label("Time zone").fill("Europe/Berlin")
    form.get_by_role("button", name="Create schedule").click()
    expect(page.get_by_test_id("flash")).to_have_text("Schedule hourly export created.")
    listed = api.call("GET", "/schedules", key).json()["items"]
    assert [s["name"] for s in listed] == ["hourly export"]
    schedule = listed[0]
    row = page.locator(f'tr[data-schedule-id="{schedule["id"]}"]')
    shown = datetime.fromisoformat(schedule["next_fire_at"]).strftime("%Y-%m-%d %H:%M:%S UTC")
    expect(row.locator('[data-col="next-fire"]')).to_have_text(shown)
    expect(row.locator('[data-col="state"]')).to_have_text("running")

    row.get_by_role("button", name="Pause hourly export").click()
    expect(row.locator('[data-col="state"]')).to_have_text("paused")
    assert api.call("GET", f"/schedules/{schedule['id']}", key).json()["enabled"] is False
    row.get_by_role("button", name="Resume hourly export").click()
    expect(row.locator('[data-col="state"]')).to_have_text("running")

    row.get_by_role("button", name="Run hourly export now").click()
    expect(page).to_have_url(re.compile(r"/ui/jobs/[0-9a-f-]{36}$"))
    job_id = page.url.rsplit("/", 1)[1]
    job = api.job(key, job_id)
    assert job["idempotency_key"].startswith(f"schedule:{schedule['id']}:")
    assert job["payload"] == {"export": "orders"}

    page.goto("/ui/schedules")
    row.get_by_role("button", name="Delete hourly export").click()
    expect(page.get_by_test_id("flash")).to_contain_text("Schedule deleted")
    assert [d for d in watch.dialogs if "Delete this schedule" in d], "deleting asks first"
    expect(page.locator(f'tr[data-schedule-id="{schedule["id"]}"]')).to_have_count(0)
    assert api.call("GET", f"/schedules/{schedule['id']}", key).status_code == 404
