"""The browser tests' fixtures: one Chromium for the session; per test, pages in browser
contexts of their own (each its own cookies, so its own sign-in), watched for console errors,
uncaught exceptions and requests that leave the API, and photographed into the test's
temporary folder at its end, pass or fail; the session's live API; live fleets that a module
starts once (`module_fleet`) and each test finds beating again after the tables and Redis keys
were cleared for it (`serving`)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, sync_playwright

from app.services.context import Context
from app.settings import Settings
from tests.browser_support import Api, PageWatch, launch
from tests.conftest import FLEET_HEARTBEATS
from tests.fleet_support import workers_of
from tests.helpers import LiveAPI, LiveFleet, wait_until

# A laptop's screen; tests of the phone layout open pages of their own size.
VIEWPORT = {"width": 1280, "height": 800}
# How long a click or a navigation may wait for its element or page (Playwright's default is
# 30 s): a page of the dashboard answers in milliseconds.
ACTION_TIMEOUT_MS = 15_000


@dataclass
class Fleet:
    """A live fleet a module shares, and the processes each test waits to see beating."""

    live: LiveFleet
    processes: int

    @property
    def host(self) -> str:
        return self.live.host


def module_fleet(settings: Settings, processes: int, **options: Any) -> Iterator[Fleet]:
    """A fleet (fast heartbeats) for a module's fixture to yield from; stopped at its end."""
    live = LiveFleet(settings, processes, **{**FLEET_HEARTBEATS, **options})
    try:
        yield Fleet(live, processes)
    finally:
        live.stop()


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        chromium = launch(playwright)
        yield chromium
        chromium.close()


@pytest.fixture
def api(live_api: LiveAPI) -> Api:
    return Api(live_api.url)


@pytest.fixture
def watch(live_api: LiveAPI) -> PageWatch:
    """What the test's pages reported; the test fails on anything unexpected in it."""
    return PageWatch(live_api.url)


@pytest.fixture
def open_page(
    browser: Browser, live_api: LiveAPI, watch: PageWatch, tmp_path: Path, ctx: Context
) -> Iterator[Callable[..., Page]]:
    """Open a page in a new browser context (a browser of its own: no cookies shared with the
    test's other pages). At the end of the test each page is saved as screenshot[-N].png in
    the test's temporary folder, then the test fails if a page reported an error."""
    contexts: list[tuple[BrowserContext, Page]] = []

    def open_one(**options: Any) -> Page:
        context = browser.new_context(base_url=live_api.url, **{"viewport": VIEWPORT, **options})
        context.set_default_timeout(ACTION_TIMEOUT_MS)
        page = context.new_page()
        watch.attach(page)
        contexts.append((context, page))
        return page

    yield open_one
    for number, (context, page) in enumerate(contexts, start=1):
        name = "screenshot.png" if number == 1 else f"screenshot-{number}.png"
        try:
            page.screenshot(path=tmp_path / name, full_page=True)
        finally:
            context.close()
    problems = watch.unexpected()
    assert not problems, "the browser reported:\n" + "\n".join(problems)


@pytest.fixture
def page(open_page: Callable[..., Page]) -> Page:
    return open_page()


def beating(ctx: Context, fleet: Fleet) -> Fleet:
    """The fleet, once its workers beat again in the Redis the test's `ctx` just cleared, and
    its reconciler has rebuilt that Redis from Postgres (it writes the epoch key when done):
    a rebuild after the test submitted jobs would push their ids a second time."""
    wait_until(lambda: len(workers_of(ctx, fleet.host)) >= fleet.processes, timeout=60)
    wait_until(lambda: ctx.redis.client.exists(ctx.keys.epoch), timeout=30)
    return fleet
