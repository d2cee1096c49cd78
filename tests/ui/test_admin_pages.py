"""The dashboard as an operator (an admin key) uses it, in a real Chromium against a live API
and fleet: resizing a host and pausing a queue from the fleet page, seen by the API; why a job
is waiting; the audit page; and the overview photographed for the README."""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from app.domain.principal import Scope
from app.services import auth
from app.services.context import Context
from app.settings import Settings
from tests.browser_support import Api, reload_until, sign_in, unlabelled_controls
from tests.fleet_support import workers_of
from tests.helpers import ROOT, wait_until
from tests.ui.conftest import Fleet, beating, module_fleet

pytestmark = [pytest.mark.live, pytest.mark.browser]

# UPDATE_SCREENSHOTS=1: the README's screenshot is rewritten from the test that takes it.
README_SCREENSHOT = ROOT / "docs" / "images" / "dashboard-overview.png"


@pytest.fixture(scope="module")
def module_workers(settings: Settings) -> Iterator[Fleet]:
    # The figures of the last hour are rolled up every second, not every 15.
    yield from module_fleet(settings, 2, threads=1, STATS_INTERVAL_SECONDS="1")


@pytest.fixture
def fleet(module_workers: Fleet, ctx: Context) -> Fleet:
    return beating(ctx, module_workers)


@pytest.fixture
def admin(ctx: Context) -> tuple[str, str]:
    """An operator's admin key (tenant `ops`): its id and its plain text."""
    record, plain = auth.create_key(ctx, "ops", [Scope.ADMIN])
    return str(record.id), plain


def manager_of(api: Api, key: str, host: str) -> dict[str, Any]:
    reply = api.call("GET", "/workers", key)
    assert reply.status_code == 200, reply.text
    managers = [w for w in reply.json()["items"] if w["host"] == host and w["kind"] == "manager"]
    return managers[0] if managers else {}


def queue_paused(api: Api, key: str, queue: str) -> bool | None:
    reply = api.call("GET", "/queues", key)
    assert reply.status_code == 200, reply.text
    return next((q["paused"] for q in reply.json() if q["queue"] == queue), None)


def all_paused(ctx: Context, fleet: Fleet, queue: str) -> bool:
    beats = workers_of(ctx, fleet.host)
    return len(beats) >= fleet.processes and all(queue in b["paused_queues"] for b in beats)


def test_an_admin_resizes_a_host_and_pauses_a_queue_and_the_api_sees_both(
    page: Page, api: Api, admin: tuple[str, str], make_key: Callable[..., str], fleet: Fleet
) -> None:
    _, key = admin
    assert manager_of(api, key, fleet.host).get("desired") == 2
    # The fleet page lists the queues that have jobs (or are paused): give `default` one.
    producer = make_key("acme", "producer")
    done = api.submit(producer, "noop")
    wait_until(lambda: api.status(producer, done) == "completed", timeout=30, interval=0.1)
    sign_in(page, key)
    page.get_by_role("navigation").get_by_role("link", name="Fleet").click()
    expect(page).to_have_url(re.compile(r"/ui/fleet$"))
    assert unlabelled_controls(page) == []

    host = page.get_by_test_id("hosts").locator(f'tr[data-host="{fleet.host}"]')
    expect(host).to_be_visible()
    workers = page.get_by_test_id("workers")
    for beat in api.call("GET", "/workers", key).json()["items"]:
        if beat["host"] == fleet.host and beat["kind"] == "worker":
            expect(workers).to_contain_text(str(beat["pid"]))

    size = host.get_by_label("Desired processes")
    size.fill("1")
    expect(size).to_have_value("1")
    host.get_by_role("button", name="Set size").click()
    expect(page.get_by_role("status")).to_be_visible()
    wait_until(lambda: manager_of(api, key, fleet.host).get("desired") == 1, timeout=20)

    queue = page.get_by_test_id("queues").locator('tr[data-queue="default"]')
    queue.get_by_role("button", name="Pause").click()
    expect(page.get_by_role("status")).to_be_visible()
    assert queue_paused(api, key, "default") is True
    paused = page.get_by_test_id("queues").locator('tr[data-queue="default"]')
    expect(paused.get_by_role("button", name="Resume")).to_be_visible()


def test_a_waiting_job_says_why_its_queue_is_paused_or_unserved(
    page: Page,
    api: Api,
    ctx: Context,
    admin: tuple[str, str],
    make_key: Callable[..., str],
    fleet: Fleet,
) -> None:
    _, admin_key = admin
    key = make_key("acme", "producer")
    assert api.call("POST", "/queues/default/pause", admin_key).status_code == 200
    # Every worker's pop honours the pause (its heartbeat says so) before the job comes.
    wait_until(lambda: all_paused(ctx, fleet, "default"), timeout=10)
    held = api.submit(key, "noop", queue="default")  # served, but paused
    unserved = api.submit(key, "noop", queue="nobody-serves-this")
    sign_in(page, key)

    page.goto(f"/ui/jobs/{held}")
    expect(page.get_by_test_id("job-status")).to_contain_text("queued")
    why = page.get_by_test_id("why-waiting")
    expect(why).to_contain_text(re.compile("paused", re.IGNORECASE))
    expect(why).not_to_contain_text(re.compile("no live", re.IGNORECASE))

    page.goto(f"/ui/jobs/{unserved}")
    why = page.get_by_test_id("why-waiting")
    expect(why).to_contain_text(re.compile(r"no live (native )?worker", re.IGNORECASE))
    expect(why).not_to_contain_text(re.compile("paused", re.IGNORECASE))

    # Resumed, the held job runs, and a job that is not waiting has no such answer.
    assert api.call("POST", "/queues/default/resume", admin_key).status_code == 200
    page.goto(f"/ui/jobs/{held}")
    reload_until(page, page.get_by_test_id("job-status"), "completed")
    expect(page.get_by_test_id("why-waiting")).to_have_count(0)


def test_the_audit_page_shows_the_admins_actions(
    page: Page, api: Api, admin: tuple[str, str], make_key: Callable[..., str], fleet: Fleet
) -> None:
    key_id, key = admin
    producer = make_key("acme", "producer")
    job = api.submit(producer, "noop", queue="nobody-serves-this")
    done = api.submit(producer, "noop")  # the fleet page lists `default`, which has a job
    wait_until(lambda: api.status(producer, done) == "completed", timeout=30, interval=0.1)
    sign_in(page, key)

    page.goto("/ui/fleet")
    host = page.get_by_test_id("hosts").locator(f'tr[data-host="{fleet.host}"]')
    size = host.get_by_label("Desired processes")
    size.fill("2")  # its size as it is: no process stops
    expect(size).to_have_value("2")
    host.get_by_role("button", name="Set size").click()
    expect(page.get_by_role("status")).to_be_visible()
    queue = page.get_by_test_id("queues").locator('tr[data-queue="default"]')
    queue.get_by_role("button", name="Pause").click()
    expect(page.get_by_role("status")).to_be_visible()
    page.get_by_test_id("queues").locator('tr[data-queue="default"]').get_by_role(
        "button", name="Resume"
    ).click()
    expect(page.get_by_role("status")).to_be_visible()
    page.goto(f"/ui/jobs/{job}")  # an admin sees every tenant's jobs
    page.get_by_role("button", name="Cancel").click()
    expect(page.get_by_role("status")).to_be_visible()

    served = api.call("GET", f"/audit?key_id={key_id}", key).json()["items"]
    actions = ["job.cancel", "queue.resume", "queue.pause", "fleet.resize"]
    assert [event["action"] for event in served] == actions  # newest first

    page.get_by_role("navigation").get_by_role("link", name="Audit").click()
    expect(page).to_have_url(re.compile(r"/ui/audit"))
    assert unlabelled_controls(page) == []
    audit = page.get_by_test_id("audit")
    for event in served:
        row = audit.locator("tr", has_text=event["request_id"])
        expect(row).to_have_count(1)
        expect(row).to_contain_text(event["action"])
        expect(row).to_contain_text(key_id)
        expect(row).to_contain_text("ops")

    # Its filters live in the URL.
    page.goto("/ui/audit?action=queue.pause")
    expect(page.get_by_test_id("audit")).to_contain_text("queue.pause")
    expect(page.get_by_test_id("audit")).not_to_contain_text("queue.resume")


def test_the_overview_photographed_for_the_readme(
    open_page: Callable[..., Page],
    api: Api,
    admin: tuple[str, str],
    make_key: Callable[..., str],
    fleet: Fleet,
    tmp_path: Path,
) -> None:
    """A fleet at work as the README shows it. With UPDATE_SCREENSHOTS=1 the picture replaces
    docs/images/dashboard-overview.png."""
    _, key = admin
    acme, globex = make_key("acme", "producer"), make_key("globex", "producer")
    assert api.call("POST", "/queues/reports/pause", key).status_code == 200
    done = api.submit_many(acme, [{"task": "noop", "payload": {"order": n}} for n in range(40)])
    done += api.submit_many(globex, [{"task": "echo", "payload": {"n": n}} for n in range(25)])
    failing = api.submit_many(
        acme, [{"task": "fail", "payload": {"message": "card declined"}, "max_retries": 0}] * 3
    )
    api.submit_many(acme, [{"task": "noop", "queue": "emails"}] * 18)
    api.submit_many(globex, [{"task": "noop", "queue": "reports"}] * 6)

    def settled() -> bool:
        reply = api.call("GET", "/overview", key).json()
        default = next((q for q in reply if q["queue"] == "default"), None)
        return default is not None and default["completed_last_hour"] == len(done)

    wait_until(settled, timeout=30)
    assert {api.status(acme, job) for job in failing} == {"failed"}

    page = open_page(viewport={"width": 1280, "height": 460})
    sign_in(page, key)
    overview = page.get_by_test_id("overview")
    for queue in ("default", "emails", "reports"):
        expect(overview.locator(f'tr[data-queue="{queue}"]')).to_be_visible()
    expect(overview.locator('tr[data-queue="reports"]')).to_contain_text(
        re.compile("paused", re.IGNORECASE)
    )
    picture = tmp_path / "dashboard-overview.png"
    page.screenshot(path=picture, full_page=True)
    assert picture.stat().st_size > 10_000
    if os.environ.get("UPDATE_SCREENSHOTS") == "1":
        README_SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(picture, README_SCREENSHOT)
