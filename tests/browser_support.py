"""The browser tests' tooling: Debian's Chromium driven by Playwright, a watch on what the
page reports (console errors, uncaught exceptions, requests that leave the API's origin),
signing in through the login form, and the live API spoken to over HTTP with a key.

Playwright brings its driver inside the pip package; its own browser builds are never
downloaded. The browser is the distribution's (`apt-get install chromium`, which
./scripts/test.sh does when it is missing), found at CHROMIUM or /usr/bin/chromium.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
from playwright.sync_api import (
    Browser,
    ConsoleMessage,
    Dialog,
    Locator,
    Page,
    Playwright,
    Request,
    expect,
)

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
# Headless, offline and quiet: no GPU, no QUIC, no first-run page, and none of the background
# traffic (component updates, sync, field trials) a browser makes on its own. The sandbox needs
# user namespaces the tests' machines (root, containers) may not grant.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# How long an expectation on the page waits by default: the pages answer in milliseconds, a
# loaded machine (two cores, a fleet beside the browser) may take seconds.
EXPECT_TIMEOUT_MS = 10_000


def launch(playwright: Playwright) -> Browser:
    """Debian's Chromium. Each launch gets a fresh profile (user-data dir) of its own in a
    temporary folder, removed on close: Playwright's `launch` makes one (it refuses a
    --user-data-dir, which is `launch_persistent_context`'s)."""
    if not os.access(CHROMIUM, os.X_OK):
        raise AssertionError(
            f"no Chromium at {CHROMIUM}: ./scripts/test.sh installs Debian's chromium package "
            "(or set CHROMIUM to a Chromium binary)"
        )
    expect.set_options(timeout=EXPECT_TIMEOUT_MS)
    return playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)


@dataclass
class PageWatch:
    """What a page reported while a test drove it. A test fails on any console error, uncaught
    exception or request to another origin (the dashboard works offline), except the console
    lines it declared: Chromium logs a console error for every page answered with 4xx, so a
    test that visits a refused page on purpose says which status it expects."""

    origin: str
    errors: list[str] = field(default_factory=list)
    foreign: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)
    allowed: list[re.Pattern[str]] = field(default_factory=list)

    def attach(self, page: Page) -> None:
        page.on("console", self._console)
        page.on("pageerror", lambda error: self.errors.append(f"uncaught: {error}"))
        page.on("request", self._request)
        page.on("dialog", self._dialog)

    def allow_status(self, *statuses: int) -> None:
        """Pages answered with these statuses are expected (the console line they cause)."""
        for status in statuses:
            self.allowed.append(re.compile(rf"the server responded with a status of {status}\b"))

    def unexpected(self) -> list[str]:
        errors = [e for e in self.errors if not any(p.search(e) for p in self.allowed)]
        return errors + [f"request outside {self.origin}: {url}" for url in self.foreign]

    def _console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.errors.append(f"console: {message.text} ({message.location.get('url', '')})")

    def _request(self, request: Request) -> None:
        if not request.url.startswith((self.origin + "/", "data:", "blob:", "about:")):
            self.foreign.append(request.url)

    def _dialog(self, dialog: Dialog) -> None:
        # The dashboard's confirm dialogs ("Delete this job?"): a person clicks OK.
        self.dialogs.append(dialog.message)
        dialog.accept()


def sign_in(page: Page, key: str, then: str | None = None) -> None:
    """Sign in through the login form, as a person does, and wait to land on `then` (default:
    the overview)."""
    page.goto("/ui/login" if then is None else f"/ui/login?next={then}")
    page.get_by_label("API key").fill(key)
    page.get_by_role("button", name="Sign in").click()
    landing = then or "/ui/"
    page.wait_for_url(re.compile(re.escape(landing.split("?")[0]) + r"(\?.*)?$"))


def job_row(within: Page | Locator, job_id: str) -> Locator:
    """A job's row in a table of jobs (the jobs list, the dead-letter queue)."""
    return within.locator(f'tr[data-job-id="{job_id}"]')


def reload_until(
    page: Page, locator: Locator, text: str | re.Pattern[str], timeout: float = 30
) -> None:
    """Reload the page until `locator` shows `text`, for pages that do not refresh themselves
    (a job's detail while a worker runs it); fails after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            expect(locator).to_contain_text(text, timeout=1_000)
            return
        except AssertionError:
            if time.monotonic() > deadline:
                raise
        page.reload()


def submit_form_of(page: Page, button: Locator) -> Locator:
    """The form a submit button belongs to."""
    return button.locator("xpath=ancestor::form[1]")


def unlabelled_controls(page: Page) -> list[str]:
    """The visible form controls of the page that have no label a screen reader announces."""
    found: list[str] = page.evaluate(
        """() => [...document.querySelectorAll('input, select, textarea')]
            .filter(el => el.type !== 'hidden' && el.type !== 'submit' && el.type !== 'button')
            .filter(el => !(el.labels && el.labels.length) && !el.getAttribute('aria-label')
                          && !el.getAttribute('aria-labelledby') && !el.title)
            .map(el => el.outerHTML.slice(0, 120))"""
    )
    return found


class Api:
    """The live API over HTTP, as a client of the platform calls it."""

    def __init__(self, url: str) -> None:
        self.url = url

    def call(self, method: str, path: str, key: str, **kwargs: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {key}"}
        return httpx.request(method, f"{self.url}{path}", headers=headers, timeout=30, **kwargs)

    def submit(self, key: str, task: str = "noop", **fields: Any) -> str:
        reply = self.call("POST", "/jobs", key, json={"task": task, **fields})
        assert reply.status_code == 201, reply.text
        return str(reply.json()["id"])

    def submit_many(self, key: str, jobs: list[dict[str, Any]]) -> list[str]:
        reply = self.call("POST", "/jobs/batch", key, json={"jobs": jobs})
        assert reply.status_code == 200, reply.text
        results = reply.json()["results"]
        assert {r["status"] for r in results} == {201}, results
        return [str(r["id"]) for r in results]

    def job(self, key: str, job_id: str) -> dict[str, Any]:
        reply = self.call("GET", f"/jobs/{job_id}", key)
        assert reply.status_code == 200, reply.text
        body: dict[str, Any] = reply.json()
        return body

    def status(self, key: str, job_id: str) -> str:
        return str(self.job(key, job_id)["status"])
