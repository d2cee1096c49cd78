"""The dashboard's job pages, in process: the job list (filters in the URL, searches by id,
idempotency key, payload and error, keyset pages), bulk actions (the count first, then the
operation and its progress), a job's page (its timeline, why it waits, its buttons) and the
dead-letter queue (groups, replays, deletes). Every action through a form is audited; no
input gives a 5xx; one tenant never sees or touches another's jobs."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from httpx import Response
from sqlalchemy import text

from app.dispatch import fleet
from app.domain.filters import error_digest
from app.domain.states import AttemptOutcome
from app.services import execution
from app.services.context import Context
from app.services.maintenance import BulkRunner

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)

# -- reading pages -------------------------------------------------------------------------

VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source",
        "track", "wbr"}  # fmt: skip


@dataclass
class Element:
    tag: str
    attrs: dict[str, str]
    children: list[Element | str] = field(default_factory=list)

    def text(self) -> str:
        parts = [c if isinstance(c, str) else c.text() for c in self.children]
        return " ".join(" ".join(parts).split())

    def walk(self) -> Iterator[Element]:
        yield self
        for child in self.children:
            if isinstance(child, Element):
                yield from child.walk()

    def find_all(self, tag: str | None = None, **attrs: str | None) -> list[Element]:
        """Elements of `tag` whose attributes hold these values (None: present, any value);
        attribute names with a dash are written with an underscore."""
        wanted = {name.replace("_", "-"): value for name, value in attrs.items()}
        return [
            e
            for e in self.walk()
            if (tag is None or e.tag == tag)
            and all(
                name in e.attrs and (value is None or e.attrs[name] == value)
                for name, value in wanted.items()
            )
        ]

    def find(self, tag: str | None = None, **attrs: str | None) -> Element:
        found = self.find_all(tag, **attrs)
        assert len(found) == 1, (tag, attrs, len(found))
        return found[0]

    def testid(self, name: str) -> Element:
        return self.find(data_testid=name)

    def buttons(self) -> list[str]:
        return [button.text() for button in self.find_all("button")]


class _Builder(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = Element("document", {})
        self.stack = [self.root]

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        element = Element(tag, {name: value or "" for name, value in attrs})
        self.stack[-1].children.append(element)
        if tag not in VOID:
            self.stack.append(element)

    def handle_endtag(self, tag: str) -> None:
        for depth in range(len(self.stack) - 1, 0, -1):
            if self.stack[depth].tag == tag:
                del self.stack[depth:]
                return

    def handle_data(self, data: str) -> None:
        self.stack[-1].children.append(data)


def parse(response: Response) -> Element:
    assert response.headers["content-type"].startswith("text/html"), response.text[:300]
    builder = _Builder()
    builder.feed(response.text)
    return builder.root


def rows(page: Element, table: str, key: str = "data-job-id") -> list[str]:
    """The `key` attribute of every row of the table data-testid=`table`, in order."""
    return [row.attrs[key] for row in page.testid(table).find_all("tr") if key in row.attrs]


def form_of(page: Element, action: str) -> dict[str, str]:
    """The fields of the page's one form posting to `action` (hidden and filled ones)."""
    form = page.find("form", action=action)
    fields = {e.attrs["name"]: e.attrs.get("value", "") for e in form.find_all("input", name=None)}
    for select in form.find_all("select", name=None):
        chosen = select.find_all("option", selected=None) or select.find_all("option")[:1]
        fields[select.attrs["name"]] = chosen[0].attrs.get("value", "") if chosen else ""
    return fields


# -- a signed-in browser -------------------------------------------------------------------


class Browser:
    """A client with a dashboard session of one key; its posts carry the session's CSRF
    token unless told otherwise. Redirects are not followed: tests read them."""

    def __init__(self, app: FastAPI, key: str) -> None:
        self.client = TestClient(app, follow_redirects=False)
        login = parse(self.client.get("/ui/login"))
        token = form_of(login, "/ui/login")["csrf_token"]
        signed = self.client.post(
            "/ui/login", data={"key": key, "csrf_token": token, "next": "/ui/jobs"}
        )
        assert signed.status_code == 303, signed.text
        page = parse(self.client.get("/ui/jobs"))
        self.csrf = page.find("form", action="/ui/logout").find("input").attrs["value"]

    def get(self, path: str, **params: str) -> Response:
        # httpx replaces a URL's own query with `params` when they are given, even empty.
        response = self.client.get(path, params=params) if params else self.client.get(path)
        assert response.status_code < 500, response.text
        return response

    def page(self, path: str, **params: str) -> Element:
        response = self.get(path, **params)
        assert response.status_code == 200, response.text
        return parse(response)

    def post(self, path: str, data: dict[str, str] | None = None, csrf: bool = True) -> Response:
        fields = dict(data or {})
        if csrf:
            fields.setdefault("csrf_token", self.csrf)
        response = self.client.post(path, data=fields)
        assert response.status_code < 500, response.text
        return response

    def follow(self, response: Response) -> Element:
        assert response.status_code == 303, response.text
        return self.page(response.headers["location"])


@pytest.fixture
def browse(app: FastAPI, make_key: Callable[..., str]) -> Callable[..., Browser]:
    def signed_in(tenant: str = "acme", scope: str = "producer") -> Browser:
        return Browser(app, make_key(tenant, scope))

    return signed_in


# -- jobs as the API and the fleet leave them ------------------------------------------------


def submit(client: TestClient, key_headers: dict[str, str], **fields: Any) -> str:
    response = client.post("/jobs", json={"task": "noop", **fields}, headers=key_headers)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def headers_of(
    make_key: Callable[..., str], tenant: str, scope: str = "producer"
) -> dict[str, str]:
    return {"Authorization": f"Bearer {make_key(tenant, scope)}"}


def run(ctx: Context, job_id: str, error: str | None = None, result: Any = None) -> None:
    """One attempt of a queued job, as a worker runs it: completed with `result`, or failed
    with `error` (retried while retries remain, else dead)."""
    (claimed,) = execution.claim(ctx, [job_id], "host-1:101:0")
    if error is None:
        assert execution.complete(ctx, claimed.lease, execution.encode_result(result))
    else:
        assert execution.fail(ctx, claimed.lease, error, AttemptOutcome.FAILED) is not None


def promote(ctx: Context, job_id: str) -> None:
    """A retry's backoff, over at once."""
    sql(ctx, "UPDATE jobs SET status = 'queued', run_at = now() WHERE id = :id", id=job_id)


def sql(ctx: Context, statement: str, **params: Any) -> Any:
    with ctx.db.transaction() as session:
        return session.execute(text(statement), params)


def status_of(ctx: Context, job_id: str) -> str | None:
    return sql(ctx, "SELECT status FROM jobs WHERE id = :id", id=job_id).scalar()


def seed(
    ctx: Context,
    count: int,
    tenant: str = "acme",
    status: str = "failed",
    queue: str = "default",
    task: str = "noop",
    error: str | None = "boom",
    created_at: datetime | None = None,
) -> list[str]:
    rows = sql(
        ctx,
        """
        INSERT INTO jobs (tenant, queue, task, status, max_retries, timeout_seconds, attempts,
                          last_error, finished_at, created_at)
        SELECT :tenant, :queue, :task, :status, 0, 60, 1, :error,
               CASE WHEN :status IN ('queued', 'scheduled') THEN NULL ELSE now() END,
               coalesce(CAST(:created_at AS timestamptz), now())
          FROM generate_series(1, :count)
        RETURNING id
        """,
        tenant=tenant,
        queue=queue,
        task=task,
        status=status,
        error=error if status == "failed" else None,
        count=count,
        created_at=created_at,
    )
    return [str(row.id) for row in rows]


def audit_actions(ctx: Context) -> list[tuple[str, str | None, Any]]:
    """(action, request id, target) of the events the keys' own requests wrote, in order."""
    return [
        (row.action, row.request_id, row.target)
        for row in sql(ctx, "SELECT * FROM audit_events WHERE actor = 'key' ORDER BY id")
    ]


def drain_bulk(ctx: Context) -> None:
    runner = BulkRunner(ctx)
    while runner.run_once(time.time()):
        pass


# -- the job list ----------------------------------------------------------------------------


def test_every_filter_lives_in_the_url_and_comes_back_in_the_form_the_links_and_bulk(
    client: TestClient, ctx: Context, producer: dict[str, str], browse: Callable[..., Browser]
) -> None:
    job_id = submit(client, producer, task="send_email", queue="mail", payload={"order": 1001})
    user = browse()
    filters = {
        "status": "queued",
        "queue": "mail",
        "task": "send_email",
        "created_after": "2020-01-01T00:00",
        "created_before": "2100-01-01T00:00+02:00",
        "q": job_id,
        "payload": '{"order": 1001}',
    }
    page = user.page("/ui/jobs", **filters, limit="1")
    assert rows(page, "jobs") == [job_id]
    search = form_of(page, "/ui/jobs")
    assert {name: search[name] for name in filters} == filters  # shown again as typed
    assert search["limit"] == "1"
    assert page.find("select", name="status").find("option", selected=None).text() == "queued"
    # The bulk form carries the same filters, and the page's links keep them.
    bulk = form_of(page, "/ui/bulk/preview")
    assert {name: bulk[name] for name in filters} == filters
    listed = page.find("a", href=f"/ui/jobs/{job_id}")
    assert listed.text() == job_id
    # A full page of one: the next page's link carries every filter and a cursor.
    (next_link,) = [a for a in page.find_all("a") if a.text() == "Next page"]
    query = parse_qs(urlsplit(next_link.attrs["href"]).query)
    assert {name: query[name] for name in filters} == {k: [v] for k, v in filters.items()}
    assert query["limit"] == ["1"] and query["cursor"]
    following = user.page(next_link.attrs["href"])
    assert rows(following, "jobs") == []
    assert [a.text() for a in following.find_all("a") if a.text() == "First page"]
    # A filter that matches nothing says so.
    assert rows(user.page("/ui/jobs", queue="elsewhere"), "jobs") == []


def test_searches_by_payload_id_idempotency_key_and_error_text(
    client: TestClient, ctx: Context, producer: dict[str, str], browse: Callable[..., Browser]
) -> None:
    order = submit(client, producer, payload={"order": 1001, "tags": ["vip"]})
    keyed = submit(client, producer, payload={"order": 1002}, idempotency_key="order-1002")
    failing = submit(client, producer, payload={"order": 1003}, max_retries=0)
    run(ctx, failing, error="ConnectionRefusedError: SMTP refused")
    user = browse()
    assert rows(user.page("/ui/jobs", payload='{"order": 1001}'), "jobs") == [order]
    assert rows(user.page("/ui/jobs", payload='{"tags": ["vip"]}'), "jobs") == [order]
    assert rows(user.page("/ui/jobs", payload='{"order": "1001"}'), "jobs") == []
    assert rows(user.page("/ui/jobs", q=keyed), "jobs") == [keyed]
    assert rows(user.page("/ui/jobs", q="order-1002"), "jobs") == [keyed]
    assert rows(user.page("/ui/jobs", q="  order-1002 "), "jobs") == [keyed]  # trimmed
    assert rows(user.page("/ui/jobs", error="smtp REFUSED"), "jobs") == [failing]
    assert rows(user.page("/ui/jobs", status="failed"), "jobs") == [failing]
    everything = user.page("/ui/jobs")
    assert rows(everything, "jobs") == [failing, keyed, order]  # newest first
    assert "3 matching jobs" in everything.testid("jobs-total").text()
    # Empty fields, as a GET form sends them, filter nothing.
    blank = dict.fromkeys(("status", "queue", "task", "q", "payload", "error"), "")
    assert rows(user.page("/ui/jobs", **blank), "jobs") == [failing, keyed, order]


@pytest.mark.parametrize(
    ("params", "named"),
    [
        ({"payload": "{order: 1001"}, "Payload contains: not valid JSON"),
        ({"payload": '"text"'}, "Payload contains: a JSON object or array is needed"),
        ({"payload": "{}"}, "Payload contains: an empty object"),
        ({"payload": '{"n": 1e999}'}, "Payload contains"),
        ({"payload": '{"n": 99999999999999999999999}'}, "Payload contains"),
        ({"payload": "[" * 5000 + "]" * 5000}, "Payload contains"),
        ({"payload": '{"a": "\\u0000"}'}, "Payload contains"),
        ({"created_after": "yesterday"}, "Created after: not a date and time"),
        ({"created_before": "2026-13-01"}, "Created before: not a date and time"),
        ({"created_after": "0001-01-01T00:00+15:00"}, "Created after"),
        ({"created_after": "9999-12-31T23:59-15:00"}, "Created after"),
        ({"status": "lost"}, "Status"),
        ({"queue": "no spaces"}, "Queue"),
        ({"task": "x" * 500}, "Task"),
        ({"q": "a\x00b"}, "Id or idempotency key"),
        ({"q": "k" * 300}, "Id or idempotency key"),
        ({"error": "ab"}, "Error contains"),
        ({"group": "not-a-digest"}, "Dead-letter group"),
        ({"cursor": "not-a-cursor"}, "cursor"),
        ({"cursor": "%%%"}, "cursor"),
        ({"limit": "0"}, "limit"),
        ({"limit": "1e3"}, "limit"),
        ({"limit": "²"}, "limit"),
    ],
)
def test_filters_that_cannot_be_read_are_named_on_the_page_never_a_5xx(
    browse: Callable[..., Browser], params: dict[str, str], named: str
) -> None:
    user = browse()
    for path in ("/ui/jobs", "/ui/dlq"):
        if path == "/ui/dlq" and set(params) & {"status", "created_after", "created_before", "q"}:
            continue  # not filters of the dead-letter queue
        response = user.get(path, **params)
        assert response.status_code == 422, (path, response.text)
        alert = parse(response).find(role="alert")
        assert named in alert.text(), alert.text()


def test_bad_bulk_forms_and_unknown_ids_give_4xx_pages(
    client: TestClient, producer: dict[str, str], browse: Callable[..., Browser]
) -> None:
    user = browse()
    bad_json = user.post("/ui/bulk/preview", {"action": "cancel", "payload": "{nope"})
    assert bad_json.status_code == 422 and "not valid JSON" in bad_json.text
    assert parse(bad_json).find(role="alert")
    bad_action = user.post("/ui/bulk/preview", {"action": "explode"})
    assert bad_action.status_code == 422 and "choose one of" in bad_action.text
    unmoved = user.post("/ui/bulk/preview", {"action": "replay", "status": "queued"})
    assert unmoved.status_code == 422 and "cannot replay jobs that are queued" in unmoved.text
    assert user.post("/ui/bulk", {"action": "cancel", "created_after": "soon"}).status_code == 422
    assert user.post("/ui/dlq/replay", {"payload": "[]"}).status_code == 422
    for path in ("/ui/jobs/not-a-uuid", f"/ui/jobs/{uuid.uuid4()}", "/ui/bulk/nope",
                 f"/ui/bulk/{uuid.uuid4()}"):  # fmt: skip
        missing = user.get(path)
        assert missing.status_code == 404, path
        assert parse(missing).testid("error").attrs["data-status"] == "404"
    for action in ("cancel", "retry", "delete"):
        assert user.post(f"/ui/jobs/{uuid.uuid4()}/{action}").status_code == 404
        assert user.post(f"/ui/jobs/zzz/{action}").status_code == 404
    for action in ("replay", "delete"):
        assert user.post(f"/ui/dlq/{uuid.uuid4()}/{action}").status_code == 404


def test_keyset_pages_walk_every_job_once_newest_first(
    ctx: Context, browse: Callable[..., Browser]
) -> None:
    """Jobs that share a creation time are told apart by id: following "Next page" from
    the first page to the last shows each job exactly once, whatever lies between."""
    mine = []
    for minute in range(8):  # 24 jobs, three per instant
        mine += seed(ctx, 3, status="completed", created_at=T0 + timedelta(minutes=minute))
    seed(ctx, 10, tenant="globex", status="completed", created_at=T0 + timedelta(minutes=3))
    seed(ctx, 4, queue="other", status="completed", created_at=T0 + timedelta(minutes=5))
    user = browse()
    url, seen, pages = "/ui/jobs?queue=default&limit=5", [], 0
    while url:
        page = user.page(url)
        seen += rows(page, "jobs")
        pages += 1
        links = [a.attrs["href"] for a in page.find_all("a") if a.text() == "Next page"]
        url = links[0] if links else ""
    assert pages == 5  # 5, 5, 5, 5, 4
    assert len(seen) == len(set(seen)) == 24 and set(seen) == set(mine)
    created = sql(
        ctx,
        "SELECT id, created_at FROM jobs WHERE id = ANY(CAST(:ids AS uuid[]))",
        ids=seen,
    ).all()
    position = {str(row.id): (row.created_at, row.id) for row in created}
    assert [position[i] for i in seen] == sorted(position.values(), reverse=True)


# -- one job ---------------------------------------------------------------------------------


def test_a_jobs_page_shows_its_payload_result_timeline_timing_and_limits(
    client: TestClient, ctx: Context, producer: dict[str, str], browse: Callable[..., Browser]
) -> None:
    job_id = submit(
        client,
        producer,
        payload={"order": 1001, "name": "Zoë <b>"},
        idempotency_key="checkout-77",
        timeout_seconds=45,
        max_retries=2,
    )
    run(ctx, job_id, error="TimeoutError: upstream slow")
    promote(ctx, job_id)
    run(ctx, job_id, result={"receipt": "R-1"})
    user = browse()
    page = user.page(f"/ui/jobs/{job_id}")
    assert page.testid("job-status").text() == "completed"
    payload = page.testid("job-payload").text()
    assert '"order": 1001' in payload and '"name": "Zoë <b>"' in payload  # text, not markup
    assert not page.find_all("b")
    assert '"receipt": "R-1"' in page.testid("job-result").text()
    assert page.testid("job-idempotency-key").text() == "checkout-77"
    assert page.testid("job-timeout").text() == "45 s"
    assert "UTC" in page.testid("job-run-at").text()
    attempts = page.testid("attempts")
    first, second = (attempts.find("tr", data_attempt=n) for n in ("1", "2"))
    assert "failed" in first.text() and "TimeoutError: upstream slow" in first.text()
    assert "host-1:101:0" in first.text()
    assert "completed" in second.text()
    assert page.buttons() == ["Sign out", "Delete"]  # finished: only Delete
    assert not page.find_all(data_testid="why-waiting")


def test_buttons_follow_the_status_and_a_replayed_timeline_keeps_one_row_per_attempt(
    client: TestClient, ctx: Context, producer: dict[str, str], browse: Callable[..., Browser]
) -> None:
    user = browse()
    queued = submit(client, producer)
    assert user.page(f"/ui/jobs/{queued}").buttons() == ["Sign out", "Cancel", "Delete"]
    running = submit(client, producer)
    execution.claim(ctx, [running], "host-1:101:0")
    page = user.page(f"/ui/jobs/{running}")
    assert page.buttons() == ["Sign out", "Cancel"]  # a running job is never deleted
    assert "running" in page.testid("attempts").find("tr", data_attempt="1").text()
    dead = submit(client, producer, max_retries=0)
    run(ctx, dead, error="ValueError: bad")
    assert user.page(f"/ui/jobs/{dead}").buttons() == ["Sign out", "Retry", "Delete"]
    user.post(f"/ui/dlq/{dead}/replay")
    run(ctx, dead, error="ValueError: bad again")
    timeline = user.page(f"/ui/jobs/{dead}").testid("attempts")
    assert rows(user.page(f"/ui/jobs/{dead}"), "attempts", "data-attempt") == ["1", "2"]
    assert "bad again" in timeline.find("tr", data_attempt="2").text()


def test_a_waiting_job_says_why_it_waits(
    client: TestClient, ctx: Context, producer: dict[str, str], browse: Callable[..., Browser]
) -> None:
    user = browse()
    job_id = submit(client, producer, queue="held")
    unserved = user.page(f"/ui/jobs/{job_id}").testid("why-waiting").text()
    assert "No live native worker serves queue 'held'" in unserved
    fleet.pause(ctx.redis.client, ctx.keys, "held")
    paused = user.page(f"/ui/jobs/{job_id}").testid("why-waiting").text()
    assert "Queue 'held' is paused" in paused
    later = submit(client, producer, queue="held", delay_seconds=3600)
    assert "It is scheduled for" in user.page(f"/ui/jobs/{later}").testid("why-waiting").text()


def test_cancel_retry_and_delete_by_form_are_audited_and_redirect_with_a_message(
    client: TestClient, ctx: Context, producer: dict[str, str], browse: Callable[..., Browser]
) -> None:
    user = browse()
    job_id = submit(client, producer)
    sql(ctx, "TRUNCATE audit_events")
    # No CSRF token: refused, nothing done, nothing recorded.
    forged = user.post(f"/ui/jobs/{job_id}/cancel", csrf=False)
    assert forged.status_code == 403 and "CSRF" in forged.text
    assert status_of(ctx, job_id) == "queued" and audit_actions(ctx) == []

    cancelled = user.post(f"/ui/jobs/{job_id}/cancel")
    assert cancelled.headers["location"] == f"/ui/jobs/{job_id}"
    page = user.follow(cancelled)
    assert page.testid("flash").text() == "Job cancelled."
    assert page.testid("job-status").text() == "cancelled"
    # Too late now: said in red on the same page, nothing recorded.
    again = user.follow(user.post(f"/ui/jobs/{job_id}/cancel"))
    assert "cannot cancel a job that is cancelled" in again.testid("flash").text()
    assert "flash-error" in again.testid("flash").attrs["class"]

    retried = user.follow(user.post(f"/ui/jobs/{job_id}/retry"))
    assert retried.testid("job-status").text() == "queued"
    deleted = user.post(f"/ui/jobs/{job_id}/delete")
    assert deleted.headers["location"] == "/ui/jobs"
    assert f"Job {job_id} deleted." in user.follow(deleted).testid("flash").text()
    assert status_of(ctx, job_id) is None

    events = audit_actions(ctx)
    assert [action for action, _, _ in events] == ["job.cancel", "job.retry", "job.delete"]
    assert all(request_id for _, request_id, _ in events)
    assert all(target["job_ids"] == [job_id] for _, _, target in events)
    key_ids = sql(ctx, "SELECT DISTINCT key_id, tenant FROM audit_events").all()
    assert [(row.tenant) for row in key_ids] == ["acme"] and key_ids[0].key_id is not None


# -- bulk actions ----------------------------------------------------------------------------


def test_a_bulk_action_counts_first_then_runs_exactly_that_many_with_progress(
    ctx: Context, settings: Any, browse: Callable[..., Browser]
) -> None:
    dead = seed(ctx, 1234, queue="billing")
    seed(ctx, 7, queue="mail")  # another queue
    seed(ctx, 9, tenant="globex", queue="billing")  # another tenant
    seed(ctx, 5, status="completed", queue="billing")  # not dead
    user = browse()
    page = user.page("/ui/jobs", queue="billing", status="failed")
    asked = form_of(page, "/ui/bulk/preview")
    preview = parse(user.post("/ui/bulk/preview", {**asked, "action": "replay"}))
    assert preview.testid("bulk-count").text() == "1234 jobs match"
    assert sql(ctx, "SELECT count(*) FROM jobs WHERE status = 'failed'").scalar() == 1234 + 16
    confirm = form_of(preview, "/ui/bulk")
    assert confirm["action"] == "replay" and confirm["queue"] == "billing"
    assert "Run on 1234 jobs" in preview.buttons()

    started = user.post("/ui/bulk", confirm)
    assert started.status_code == 303
    operation_url = started.headers["location"]
    assert re.fullmatch(r"/ui/bulk/[0-9a-f-]{36}", operation_url)
    progress = user.follow(started)
    assert progress.testid("bulk-status").text() == "pending"
    assert progress.testid("bulk-progress").text() == "0 of 1234"
    live = progress.find(id="bulk-live")
    assert int(live.attrs["data-refresh"]) >= 500  # app.js refreshes it in place
    assert "Replay: started on 1234 jobs." in progress.testid("flash").text()

    # The duty runs it in batches; the page follows, then stops refreshing.
    runner = BulkRunner(ctx, batches=1)
    seen = []
    while runner.run_once(time.time()):
        shown = user.page(operation_url)
        seen.append(shown.testid("bulk-progress").text())
    assert seen[0] == f"{settings.bulk_batch_size} of 1234" and len(seen) >= 3
    done = user.page(operation_url)
    assert done.testid("bulk-status").text() == "done"
    assert done.testid("bulk-progress").text() == "1234 of 1234"
    assert "data-refresh" not in done.find(id="bulk-live").attrs
    replayed = sql(
        ctx, "SELECT count(*) FROM jobs WHERE status = 'queued' AND id = ANY(CAST(:i AS uuid[]))",
        i=dead,
    ).scalar()  # fmt: skip
    assert replayed == 1234
    assert sql(ctx, "SELECT count(*) FROM jobs WHERE status = 'failed'").scalar() == 16
    (event,) = [e for e in audit_actions(ctx) if e[0] == "bulk.start"]
    assert event[2]["total"] == 1234 and event[2]["filter"]["queue"] == "billing"
    listed = user.page("/ui/bulk")
    assert rows(listed, "bulk-operations", "data-operation-id") == [operation_url.split("/")[-1]]


def test_bulk_cancel_from_the_list_and_an_empty_match(
    client: TestClient, ctx: Context, producer: dict[str, str], browse: Callable[..., Browser]
) -> None:
    waiting = [submit(client, producer, queue="mail") for _ in range(3)]
    elsewhere = submit(client, producer, queue="other")
    user = browse()
    preview = parse(user.post("/ui/bulk/preview", {"action": "cancel", "queue": "mail"}))
    assert preview.testid("bulk-count").text() == "3 jobs match"
    user.post("/ui/bulk", form_of(preview, "/ui/bulk"))
    drain_bulk(ctx)
    assert [status_of(ctx, j) for j in waiting] == ["cancelled"] * 3
    assert status_of(ctx, elsewhere) == "queued"
    nothing = parse(user.post("/ui/bulk/preview", {"action": "cancel", "queue": "mail"}))
    assert nothing.testid("bulk-count").text() == "0 jobs match"
    assert not nothing.find_all("form", action="/ui/bulk")


# -- the dead-letter queue -------------------------------------------------------------------


def test_dead_letters_group_by_task_and_error_and_replay_one_group(
    ctx: Context, browse: Callable[..., Browser]
) -> None:
    refused = seed(ctx, 4, task="mail", error="SMTP refused")
    slow = seed(ctx, 2, task="mail", error="Traceback:\n  slow\nTimeoutError")
    other_task = seed(ctx, 1, task="bill", error="SMTP refused")
    seed(ctx, 3, tenant="globex", task="mail", error="SMTP refused")
    user = browse()
    page = user.page("/ui/dlq")
    groups = page.testid("dlq-groups")
    keys = rows(page, "dlq-groups", "data-group")
    assert keys == [error_digest("SMTP refused"), error_digest("Traceback:\n  slow\nTimeoutError"),
                    error_digest("SMTP refused")]  # fmt: skip
    counts = [c.text() for c in groups.find_all(data_testid="dlq-group-count")]
    assert counts == ["4", "2", "1"]
    assert set(rows(page, "dlq")) == set(refused + slow + other_task)

    # "Show" narrows the list to the group; "Replay all" replays the group, and only it.
    slow_row = groups.find("tr", data_group=error_digest("Traceback:\n  slow\nTimeoutError"))
    (show,) = [a for a in slow_row.find_all("a") if a.text() == "Show"]
    assert set(rows(user.page(show.attrs["href"]), "dlq")) == set(slow)
    replay_all = {
        e.attrs["name"]: e.attrs["value"]
        for e in groups.find("tr", data_task="mail", data_group=error_digest("SMTP refused"))
        .find("form")
        .find_all("input")
    }
    started = user.post("/ui/dlq/replay", replay_all)
    assert started.status_code == 303 and started.headers["location"].startswith("/ui/bulk/")
    assert user.follow(started).testid("bulk-progress").text() == "0 of 4"
    drain_bulk(ctx)
    assert [status_of(ctx, j) for j in refused] == ["queued"] * 4
    assert [status_of(ctx, j) for j in slow + other_task] == ["failed"] * 3
    assert rows(user.page("/ui/dlq"), "dlq-groups", "data-group") == [
        error_digest("Traceback:\n  slow\nTimeoutError"),
        error_digest("SMTP refused"),
    ]


def test_replay_and_delete_one_dead_letter_are_audited(
    ctx: Context, browse: Callable[..., Browser]
) -> None:
    first, second = seed(ctx, 2, task="mail")
    user = browse()
    sql(ctx, "TRUNCATE audit_events")
    here = "/ui/dlq?task=mail"
    replayed = user.post(f"/ui/dlq/{first}/replay", {"back": here})
    assert replayed.headers["location"] == here
    page = user.follow(replayed)
    assert "replayed" in page.testid("flash").text()
    assert rows(page, "dlq") == [second]
    assert status_of(ctx, first) == "queued"
    again = user.follow(user.post(f"/ui/dlq/{first}/replay"))
    assert "not in the dead-letter queue" in again.testid("flash").text()
    deleted = user.post(f"/ui/dlq/{second}/delete", {"back": "https://evil.example/ui/"})
    assert deleted.headers["location"] == "/ui/dlq"  # never another site
    assert status_of(ctx, second) is None
    assert [(a, t["job_ids"]) for a, _, t in audit_actions(ctx)] == [
        ("job.replay", [first]),
        ("job.delete", [second]),
    ]


# -- tenant walls ----------------------------------------------------------------------------


def test_one_tenant_never_sees_nor_touches_another_tenants_jobs(
    client: TestClient,
    ctx: Context,
    make_key: Callable[..., str],
    browse: Callable[..., Browser],
) -> None:
    acme_key, globex_key = headers_of(make_key, "acme"), headers_of(make_key, "globex")
    mine = submit(client, acme_key, payload={"order": 1})
    theirs = submit(client, globex_key, payload={"order": 777}, idempotency_key="secret-key")
    their_dead = seed(ctx, 3, tenant="globex", task="mail", error="Globex outage")
    their_other = submit(client, globex_key, queue="mail")
    acme = browse("acme")
    globex = browse("globex")

    listed = rows(acme.page("/ui/jobs"), "jobs")
    assert listed == [mine]
    for params in (
        {"payload": '{"order": 777}'},
        {"q": theirs},
        {"q": "secret-key"},
        {"error": "outage"},
        {"status": "failed"},
    ):
        assert rows(acme.page("/ui/jobs", **params), "jobs") == [], params
    assert acme.get("/ui/jobs", tenant="globex").status_code == 403
    assert acme.get("/ui/dlq", tenant="globex").status_code == 403
    assert rows(acme.page("/ui/jobs", tenant="acme"), "jobs") == [mine]
    for job_id in (theirs, their_dead[0]):
        assert acme.get(f"/ui/jobs/{job_id}").status_code == 404
    dlq = acme.page("/ui/dlq")
    assert rows(dlq, "dlq") == [] and rows(dlq, "dlq-groups", "data-group") == []
    assert "Globex" not in acme.get("/ui/dlq").text
    # Actions on their jobs: unknown, and nothing changes.
    for action in ("cancel", "retry", "delete"):
        assert acme.post(f"/ui/jobs/{their_other}/{action}").status_code == 404
    for action in ("replay", "delete"):
        assert acme.post(f"/ui/dlq/{their_dead[0]}/{action}").status_code == 404
    assert (
        acme.post("/ui/bulk/preview", {"action": "cancel", "tenant": "globex"}).status_code == 403
    )
    assert acme.post("/ui/bulk", {"action": "cancel", "tenant": "globex"}).status_code == 403
    cancel_all = parse(acme.post("/ui/bulk/preview", {"action": "cancel"}))
    assert cancel_all.testid("bulk-count").text() == "1 jobs match"
    group = {"task": "mail", "group": error_digest("Globex outage")}
    acme.post("/ui/dlq/replay", group)
    acme.post("/ui/bulk", {"action": "cancel"})
    drain_bulk(ctx)
    assert status_of(ctx, theirs) == status_of(ctx, their_other) == "queued"
    assert [status_of(ctx, j) for j in their_dead] == ["failed"] * 3
    assert status_of(ctx, mine) == "cancelled"
    # Their bulk operation is not ours to read.
    started = globex.post("/ui/bulk", {"action": "replay", "task": "mail"})
    operation = started.headers["location"]
    assert acme.get(operation).status_code == 404
    assert operation.split("/")[-1] not in acme.get("/ui/bulk").text
    assert acme.post(operation + "/cancel").status_code == 404


def test_an_admin_sees_every_tenant_and_can_narrow_to_one(
    client: TestClient,
    ctx: Context,
    make_key: Callable[..., str],
    browse: Callable[..., Browser],
) -> None:
    mine = submit(client, headers_of(make_key, "acme"))
    theirs = submit(client, headers_of(make_key, "globex"))
    seed(ctx, 2, tenant="globex", task="mail")
    seed(ctx, 1, tenant="acme", task="mail")
    admin = browse("ops", "admin")
    page = admin.page("/ui/jobs")
    assert {mine, theirs} <= set(rows(page, "jobs"))
    assert page.find("input", name="tenant")  # the tenant filter is an admin's
    assert rows(admin.page("/ui/jobs", tenant="globex", status="queued"), "jobs") == [theirs]
    counts = admin.page("/ui/dlq", tenant="globex").testid("dlq-groups")
    assert [c.text() for c in counts.find_all(data_testid="dlq-group-count")] == ["2"]
    assert admin.page(f"/ui/jobs/{theirs}").testid("job-status").text() == "queued"
    producer_page = browse("acme").page("/ui/jobs")
    assert not producer_page.find_all("input", name="tenant")
