"""A bulk replay of 10,000 dead jobs from the dashboard: the jobs page's filter, the count first
(a dry run), then the operation's page showing it advance batch by batch, finished by the
bulk duty of a live fleet, which also runs every one of the 10,000 jobs."""

from __future__ import annotations

import re
import time
from collections.abc import Callable

import pytest
from playwright.sync_api import Page, expect
from sqlalchemy import text

from app.services.context import Context
from app.services.maintenance import BulkRunner
from tests.browser_support import sign_in
from tests.helpers import LiveFleet, wait_until
from tests.test_bulk import by_status, seed

pytestmark = [pytest.mark.live, pytest.mark.browser, pytest.mark.usefixtures("untraced")]

DEAD = 10_000


def of_total(done: int) -> re.Pattern[str]:
    """The progress "done of total" (thousands with or without a separator)."""
    shown = f"{done:,}".replace(",", ",?")
    return re.compile(rf"\b{shown} of 10,?000\b")


def completed_attempts(ctx: Context, ids: list[str]) -> int:
    """The jobs among `ids` with exactly one attempt row, which completed."""
    with ctx.db.transaction() as session:
        return int(
            session.scalar(
                text(
                    """
                    SELECT count(*) FROM (
                        SELECT job_id FROM job_attempts
                         WHERE job_id = ANY(CAST(:ids AS uuid[]))
                         GROUP BY job_id
                        HAVING count(*) = 1 AND bool_and(outcome = 'completed')
                    ) AS once
                    """
                ),
                {"ids": ids},
            )
        )


def test_a_bulk_replay_of_10000_dead_jobs_counts_first_advances_in_batches_and_all_run(
    page: Page,
    ctx: Context,
    make_key: Callable[..., str],
    start_fleet: Callable[..., LiveFleet],
) -> None:
    key = make_key("acme", "producer")
    # Seeded in one statement each: what 10,000 failures would have left in the table.
    dead = seed(ctx, DEAD, queue="bulk", task="noop")
    seed(ctx, 25, queue="other", task="noop")  # dead, but another queue
    seed(ctx, 25, tenant="globex", queue="bulk", task="noop")  # another tenant's
    seed(ctx, 25, status="completed", queue="bulk", task="noop")  # not dead
    sign_in(page, key)

    page.goto("/ui/jobs?status=failed&queue=bulk")
    rows = page.get_by_test_id("jobs").locator("tr[data-job-id]")
    expect(rows.first).to_be_visible()
    # Keyset pages: the next page (its cursor in the URL) holds other jobs of the filter.
    first_page = set(rows.evaluate_all("rows => rows.map(r => r.dataset.jobId)"))
    assert first_page and first_page <= set(dead)
    page.get_by_role("link", name="Next page").click()
    expect(page).to_have_url(re.compile(r"[?&]cursor="))
    expect(rows.first).to_be_visible()
    second_page = set(rows.evaluate_all("rows => rows.map(r => r.dataset.jobId)"))
    assert second_page <= set(dead) and not first_page & second_page

    page.goto("/ui/jobs?status=failed&queue=bulk")
    page.get_by_label("Bulk action").select_option("replay")
    page.get_by_role("button", name="Preview").click()
    expect(page.get_by_test_id("bulk-count")).to_contain_text(re.compile(r"10,?000 jobs match"))
    assert by_status(ctx, queue="bulk", tenant="acme")["failed"] == DEAD  # only counted

    page.get_by_role("button", name=re.compile(r"Run on 10,?000 jobs")).click()
    page.wait_for_url(re.compile(r"/ui/bulk/[0-9a-f-]{36}$"))
    progress = page.get_by_test_id("bulk-progress")
    expect(progress).to_contain_text(of_total(0))
    page.evaluate("() => { window.stillTheSamePage = true; }")

    # No process runs the bulk duty yet: the test runs its first batches, one at a time, and
    # the page shows each as it lands, refreshing itself (no reload, no click).
    runner = BulkRunner(ctx, batches=1)
    batch = ctx.settings.bulk_batch_size
    for step in (1, 2):
        assert runner.run_once(time.time()) == batch
        expect(progress).to_contain_text(of_total(step * batch))
        expect(page.get_by_test_id("bulk-status")).to_contain_text("running")

    # A live fleet's bulk duty takes the operation over, and its workers run every job.
    start_fleet(processes=2, threads=4, queues="bulk")
    expect(progress).to_contain_text(of_total(DEAD), timeout=60_000)
    expect(page.get_by_test_id("bulk-status")).to_contain_text(re.compile("done|completed"))
    expect(page.get_by_test_id("bulk-skipped")).to_have_text("0")
    assert page.evaluate("() => window.stillTheSamePage === true"), "the page was reloaded"
    wait_until(
        lambda: by_status(ctx, queue="bulk", tenant="acme")["completed"] == DEAD + 25, timeout=60
    )
    assert completed_attempts(ctx, dead) == DEAD  # each ran, once
    assert by_status(ctx, queue="other") == {"failed": 25}
    assert by_status(ctx, tenant="globex") == {"failed": 25}
