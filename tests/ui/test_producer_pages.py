"""The dashboard as a producer uses it, in a real Chromium against a live API and fleet: signing
in and out, a job submitted over the API in the list, its detail and attempt timeline, the
searches, a dead job replayed from the dead-letter page, the CSRF wall, the tenant wall, the
overview refreshing itself, and the phone layout."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator

import pytest
from playwright.sync_api import Page, expect

from app.services.context import Context
from app.settings import Settings
from tests.browser_support import (
    Api,
    PageWatch,
    job_row,
    reload_until,
    sign_in,
    submit_form_of,
    unlabelled_controls,
)
from tests.helpers import wait_until
from tests.ui.conftest import Fleet, beating, module_fleet

pytestmark = [pytest.mark.live, pytest.mark.browser]

# A failed attempt is retried at once (a backoff of at most 1 ms), promoted within 0.1 s.
FAST_RETRIES = {"RETRY_BASE": "1.5", "RETRY_CAP": "0.001", "PROMOTE_INTERVAL_SECONDS": "0.1"}
# A queue no worker of these tests serves: its jobs stay queued.
IDLE = "idle"


@pytest.fixture(scope="module")
def module_workers(settings: Settings) -> Iterator[Fleet]:
    yield from module_fleet(settings, 1, threads=4, **FAST_RETRIES)


@pytest.fixture
def fleet(module_workers: Fleet, ctx: Context) -> Fleet:
    return beating(ctx, module_workers)


def dead_job(api: Api, key: str, **fields: object) -> str:
    """A job in the dead-letter queue: its one attempt fails; replayed, it completes."""
    job_id = api.submit(key, "fails_once", max_retries=0, **fields)
    wait_until(lambda: api.status(key, job_id) == "failed", timeout=30, interval=0.1)
    return job_id


def test_a_producer_signs_in_with_a_key_and_out_again(
    page: Page, make_key: Callable[..., str], watch: PageWatch
) -> None:
    key = make_key("acme", "producer")
    watch.allow_status(401, 403)

    # Not signed in: to the login page, which brings the reader back where it was going.
    page.goto("/ui/jobs")
    expect(page).to_have_url(re.compile(r"/ui/login\?next=(%2F|/)ui(%2F|/)jobs"))
    answer = page.goto("/ui/login")
    assert answer is not None
    headers = answer.headers
    policy = headers.get("content-security-policy", "")
    assert "default-src 'self'" in policy and "frame-ancestors 'none'" in policy, policy
    assert headers.get("x-content-type-options") == "nosniff"
    assert headers.get("referrer-policy"), headers

    page.get_by_label("API key").fill("jf_not-a-key")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_text("That key was not accepted")).to_be_visible()

    # A worker's key is no way into the dashboard.
    page.goto("/ui/login")
    page.get_by_label("API key").fill(make_key("acme", "worker"))
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(re.compile(r"/ui/login"))
    assert not [c for c in page.context.cookies() if c["name"] == "jf_session"]

    sign_in(page, key, then="/ui/jobs")
    (session,) = [c for c in page.context.cookies() if c["name"] == "jf_session"]
    assert session["httpOnly"] and session["sameSite"] == "Strict"
    assert time.time() < session["expires"] <= time.time() + 8 * 3600 + 60
    assert key not in session["value"]  # the key itself never travels in the cookie
    nav = page.get_by_role("navigation")
    for link in ("Overview", "Jobs", "Dead letters"):
        expect(nav.get_by_role("link", name=link)).to_be_visible()
    for link in ("Fleet", "Audit"):  # admin pages
        expect(nav.get_by_role("link", name=link)).to_have_count(0)

    page.get_by_role("button", name="Sign out").click()
    expect(page).to_have_url(re.compile(r"/ui/login"))
    page.goto("/ui/")
    expect(page).to_have_url(re.compile(r"/ui/login"))


def test_a_submitted_job_is_listed_opens_on_its_attempts_and_is_found_by_its_payload(
    page: Page, api: Api, make_key: Callable[..., str], fleet: Fleet, watch: PageWatch
) -> None:
    key = make_key("acme", "producer")
    job = api.submit(
        key, "flaky", payload={"order": 1001, "failures": 1}, max_retries=1,
        idempotency_key="order-1001",
    )  # fmt: skip
    other = api.submit(key, "noop", payload={"order": 1002}, queue=IDLE)
    sign_in(page, key)

    page.get_by_role("navigation").get_by_role("link", name="Jobs").click()
    expect(job_row(page, job)).to_be_visible()
    expect(job_row(page, other)).to_be_visible()

    job_row(page, job).locator(f'a[href$="/ui/jobs/{job}"]').first.click()
    expect(page).to_have_url(re.compile(rf"/ui/jobs/{job}$"))
    # The first attempt fails, the retry completes.
    reload_until(page, page.get_by_test_id("job-status"), "completed")
    history = api.job(key, job)["history"]
    attempts = page.get_by_test_id("attempts").locator("tr[data-attempt]")
    expect(attempts).to_have_count(2)
    first = page.get_by_test_id("attempts").locator('tr[data-attempt="1"]')
    expect(first).to_contain_text("failed")
    expect(first).to_contain_text("flaky failure 1 of 1")
    expect(first).to_contain_text(history[0]["worker_id"])
    second = page.get_by_test_id("attempts").locator('tr[data-attempt="2"]')
    expect(second).to_contain_text("completed")
    expect(second).to_contain_text(history[1]["worker_id"])
    expect(page.get_by_test_id("job-payload")).to_contain_text(re.compile(r'"order":\s*1001'))
    expect(page.get_by_test_id("job-result")).to_contain_text(re.compile(r'"attempt":\s*2'))
    expect(page.get_by_test_id("job-idempotency-key")).to_have_text("order-1001")

    # Search inside payloads (JSON containment), by id and by idempotency key: the filters
    # live in the URL.
    page.goto("/ui/jobs")
    page.locator('[name="payload"]').fill('{"order": 1001}')
    page.get_by_role("button", name="Search").click()
    expect(page).to_have_url(re.compile(r"[?&]payload="))
    expect(job_row(page, job)).to_be_visible()
    expect(job_row(page, other)).to_have_count(0)
    for query in (job, "order-1001"):
        page.goto("/ui/jobs")
        page.locator('[name="q"]').fill(query)
        page.get_by_role("button", name="Search").click()
        expect(job_row(page, job)).to_be_visible()
        expect(job_row(page, other)).to_have_count(0)
    page.goto(f"/ui/jobs?queue={IDLE}")
    expect(job_row(page, other)).to_be_visible()
    expect(job_row(page, job)).to_have_count(0)

    # A payload that is not JSON is an error on the page, not a server error.
    watch.allow_status(400, 422)
    answer = page.goto("/ui/jobs?payload=%7B%22order%22%3A")
    assert answer is not None and answer.status in (400, 422), answer and answer.status
    expect(page.get_by_role("alert")).to_be_visible()


def test_a_dead_job_is_replayed_from_the_dead_letter_page_and_completes(
    page: Page, api: Api, make_key: Callable[..., str], fleet: Fleet
) -> None:
    key = make_key("acme", "producer")
    dead = dead_job(api, key)
    sign_in(page, key)

    page.goto("/ui/jobs?error=first+run")  # search in the error text
    expect(job_row(page, dead)).to_be_visible()

    page.get_by_role("navigation").get_by_role("link", name="Dead letters").click()
    groups = page.get_by_test_id("dlq-groups")
    expect(groups).to_contain_text("fails_once")
    expect(groups).to_contain_text("first run fails")
    row = job_row(page.get_by_test_id("dlq"), dead)
    expect(row).to_be_visible()
    row.get_by_role("button", name="Replay").click()
    expect(page.get_by_role("status")).to_be_visible()  # the flash after the redirect
    expect(job_row(page.get_by_test_id("dlq"), dead)).to_have_count(0)

    page.goto(f"/ui/jobs/{dead}")
    reload_until(page, page.get_by_test_id("job-status"), "completed")
    # The timeline keeps the dead attempt and numbers the replay's after it.
    attempts = page.get_by_test_id("attempts")
    expect(attempts.locator("tr[data-attempt]")).to_have_count(2)
    expect(attempts.locator('tr[data-attempt="1"]')).to_contain_text("first run fails")
    expect(attempts.locator('tr[data-attempt="2"]')).to_contain_text("completed")
    assert api.status(key, dead) == "completed"


def test_a_group_of_dead_letters_is_replayed_at_once_and_one_deleted(
    page: Page, api: Api, make_key: Callable[..., str], fleet: Fleet, watch: PageWatch
) -> None:
    key = make_key("acme", "producer")
    group = [dead_job(api, key), dead_job(api, key)]
    declined = api.submit(key, "fail", payload={"message": "card declined"}, max_retries=0)
    wait_until(lambda: api.status(key, declined) == "failed", timeout=30, interval=0.1)
    sign_in(page, key)
    page.goto("/ui/dlq")
    groups = page.get_by_test_id("dlq-groups")
    expect(
        groups.locator('tr[data-task="fails_once"]').get_by_test_id("dlq-group-count")
    ).to_have_text("2")
    expect(groups.locator('tr[data-task="fail"]').get_by_test_id("dlq-group-count")).to_have_text(
        "1"
    )

    # A group's replay is a bulk operation on its filter (task and error): its page shows it
    # through, the fleet's bulk duty running it.
    groups.locator('tr[data-task="fails_once"]').get_by_role("button", name="Replay all").click()
    expect(page).to_have_url(re.compile(r"/ui/bulk/[0-9a-f-]{36}$"))
    expect(page.get_by_test_id("bulk-progress")).to_contain_text("2 of 2")
    for job_id in group:
        wait_until(lambda: api.status(key, job_id) == "completed", timeout=30, interval=0.1)  # noqa: B023
    page.goto("/ui/dlq")
    expect(groups.locator('tr[data-task="fails_once"]')).to_have_count(0)
    expect(groups.locator('tr[data-task="fail"]')).to_have_count(1)

    job_row(page.get_by_test_id("dlq"), declined).get_by_role("button", name="Delete").click()
    expect(page.get_by_role("status")).to_be_visible()
    assert [d for d in watch.dialogs if "Delete" in d], "deleting asks first"
    expect(job_row(page.get_by_test_id("dlq"), declined)).to_have_count(0)
    assert api.call("GET", f"/jobs/{declined}", key).status_code == 404


def test_a_form_posted_without_its_csrf_token_is_refused(
    open_page: Callable[..., Page], api: Api, make_key: Callable[..., str], watch: PageWatch
) -> None:
    watch.allow_status(403)
    key = make_key("acme", "producer")
    job = api.submit(key, "noop", queue=IDLE)  # stays queued: it can be cancelled
    page = open_page()
    sign_in(page, key)
    page.goto(f"/ui/jobs/{job}")
    cancel = page.get_by_role("button", name="Cancel")
    form = submit_form_of(page, cancel)
    expect(form.locator('input[name="csrf_token"]')).to_have_count(1)
    action = form.get_attribute("action")
    assert action, "the cancel form names its action"

    # With the session cookie but no token, or a forged one: refused.
    forms: list[dict[str, str | float | bool]] = [{}, {"csrf_token": "forged"}]
    for fields in forms:
        refused = page.request.post(action, form=fields, max_redirects=0)
        assert refused.status == 403, (fields, refused.status)
        assert "CSRF" in refused.text()

    # The form in the browser, its token removed: refused too.
    form.locator('input[name="csrf_token"]').evaluate("input => input.remove()")
    with page.expect_response(lambda r: r.request.method == "POST") as posted:
        cancel.click()
    assert posted.value.status == 403
    expect(page.locator("body")).to_contain_text("CSRF")
    assert api.status(key, job) == "queued"

    # The same form with its token works: the token, not the form, was refused.
    page.goto(f"/ui/jobs/{job}")
    page.get_by_role("button", name="Cancel").click()
    expect(page.get_by_role("status")).to_be_visible()
    wait_until(lambda: api.status(key, job) == "cancelled", timeout=10)

    # The login form is guarded as well (a token before any session).
    stranger = open_page()
    stranger.goto("/ui/login")
    stranger.locator('input[name="csrf_token"]').evaluate("input => input.remove()")
    stranger.get_by_label("API key").fill(key)
    with stranger.expect_response(lambda r: r.request.method == "POST") as posted:
        stranger.get_by_role("button", name="Sign in").click()
    assert posted.value.status == 403
    assert not [c for c in stranger.context.cookies() if c["name"] == "jf_session"]


def test_a_producer_never_sees_another_tenants_jobs(
    page: Page, api: Api, make_key: Callable[..., str], fleet: Fleet, watch: PageWatch
) -> None:
    watch.allow_status(403, 404)
    acme, globex = make_key("acme", "producer"), make_key("globex", "producer")
    ours = api.submit(acme, "noop", payload={"order": 1001}, queue=IDLE, idempotency_key="k-1")
    ours_dead = dead_job(api, acme)
    theirs = api.submit(globex, "noop", payload={"order": 1001}, queue=IDLE, idempotency_key="k-1")
    theirs_dead = dead_job(api, globex)
    # Enough of theirs that a count mixing them in would show: 123 more in the shared queue,
    # and a queue of their own.
    crowd = api.submit_many(globex, [{"task": "noop", "queue": IDLE}] * 123)
    private = api.submit(globex, "noop", queue="globex-only")
    all_theirs = [theirs, theirs_dead, private, *crowd[:5]]
    sign_in(page, acme)

    def none_of_theirs() -> None:
        for job_id in all_theirs:
            expect(job_row(page, job_id)).to_have_count(0)

    # The list, every search and filter (even one naming their tenant).
    searches = [
        "/ui/jobs",
        "/ui/jobs?payload=%7B%22order%22%3A+1001%7D",
        "/ui/jobs?q=k-1",
        f"/ui/jobs?q={theirs}",
        "/ui/jobs?error=first+run",
        "/ui/jobs?status=failed",
        "/ui/jobs?queue=globex-only",
        "/ui/jobs?tenant=globex",
    ]
    for url in searches:
        answer = page.goto(url)
        assert answer is not None
        if answer.status == 200:  # a producer naming another tenant may be refused (403)
            expect(page.get_by_test_id("jobs")).to_be_visible()
        else:
            assert url.endswith("tenant=globex") and answer.status == 403, (url, answer.status)
        none_of_theirs()
    page.goto("/ui/jobs")
    expect(job_row(page, ours)).to_be_visible()
    page.goto("/ui/jobs?payload=%7B%22order%22%3A+1001%7D")
    expect(job_row(page, ours)).to_be_visible()
    page.goto("/ui/jobs?q=k-1")
    expect(job_row(page, ours)).to_be_visible()

    # Their job's page is not found, as if it did not exist.
    for job_id in (theirs, theirs_dead):
        answer = page.goto(f"/ui/jobs/{job_id}")
        assert answer is not None and answer.status == 404, job_id

    # The dead-letter queue: ours only, and its groups count ours only.
    page.goto("/ui/dlq")
    expect(job_row(page, ours_dead)).to_be_visible()
    none_of_theirs()
    group = page.get_by_test_id("dlq-groups").locator('tr[data-task="fails_once"]')
    expect(group.get_by_test_id("dlq-group-count")).to_have_text("1")

    # The overview: not their queue, and not their jobs in a queue both use.
    page.goto("/ui/")
    expect(page.locator('tr[data-queue="globex-only"]')).to_have_count(0)
    idle_row = page.locator(f'tr[data-queue="{IDLE}"]')
    expect(idle_row.locator('[data-col="queued"]')).to_have_text("1")
    expect(idle_row.locator('[data-col="ready"]')).to_have_text("1")

    # A bulk action's dry run counts ours only.
    page.goto(f"/ui/jobs?queue={IDLE}")
    page.get_by_label("Bulk action").select_option("cancel")
    page.get_by_role("button", name="Preview").click()
    expect(page.get_by_test_id("bulk-count")).to_contain_text(re.compile(r"\b1 jobs? match"))

    # And the admin pages are closed to a producer.
    for admin_only in ("/ui/fleet", "/ui/audit"):
        answer = page.goto(admin_only)
        assert answer is not None and answer.status in (403, 404), admin_only


def test_the_overview_refreshes_itself(page: Page, api: Api, make_key: Callable[..., str]) -> None:
    key = make_key("acme", "producer")
    api.submit(key, "noop", queue=IDLE)
    sign_in(page, key)
    overview = page.get_by_test_id("overview")
    queued = overview.locator(f'tr[data-queue="{IDLE}"] [data-col="queued"]')
    expect(queued).to_have_text("1")
    page.evaluate("() => { window.stillTheSamePage = true; }")

    # New jobs change the counts, and add the row of a new queue, without a reload or a click.
    api.submit(key, "noop", queue=IDLE)
    api.submit(key, "noop", queue="fresh")
    expect(queued).to_have_text("2", timeout=20_000)
    fresh = overview.locator('tr[data-queue="fresh"] [data-col="queued"]')
    expect(fresh).to_have_text("1", timeout=20_000)
    assert page.evaluate("() => window.stillTheSamePage === true"), "the page was reloaded"


def test_the_pages_label_every_control_and_fit_a_phone(
    open_page: Callable[..., Page], api: Api, make_key: Callable[..., str]
) -> None:
    key = make_key("acme", "producer")
    job = api.submit(key, "noop", queue=IDLE)
    page = open_page(viewport={"width": 375, "height": 740})

    # Signing in with the keyboard alone.
    page.goto("/ui/login")
    page.get_by_label("API key").focus()
    page.keyboard.type(key)
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(r"/ui/$"))

    for url in ("/ui/", "/ui/jobs", f"/ui/jobs/{job}", "/ui/dlq", "/ui/login"):
        page.goto(url)
        assert unlabelled_controls(page) == [], url
        # Wide tables may scroll in a box of their own; the page itself does not scroll sideways.
        width = page.evaluate("() => document.documentElement.scrollWidth")
        assert width <= 375, (url, width)
    page.goto("/ui/")
    expect(page.get_by_role("button", name="Sign out")).to_be_visible()
