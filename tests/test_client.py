"""The Python client (client/, package `jobfleet`) against a live API and fleet: submit and
wait, sync and async; submit_many of 5,000 jobs; iterate over 2,500; a submit whose reply is
lost; a 429 waited out; a batch too large for the API split; the problem JSON in its errors;
the dead-letter queue, admin calls and the lease protocol."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from jobfleet import (
    AsyncClient,
    Client,
    IdempotencyConflict,
    InvalidState,
    JobFailed,
    LeaseLost,
    NotFound,
    PayloadTooLarge,
    RateLimited,
    RetryPolicy,
    TransportError,
    Unauthorized,
    ValidationError,
    WaitTimeout,
)

from app.settings import Settings
from tests.helpers import LiveAPI

pytestmark = pytest.mark.live


@pytest.fixture
def key(make_key: Callable[..., str]) -> str:
    """A key that may submit, lease and administer (tenant acme)."""
    return make_key("acme", "producer", "worker", "admin")


@pytest.fixture
def jobs(live_api: LiveAPI, key: str) -> Iterator[Client]:
    with Client(live_api.url, key) as client:
        yield client


def test_submit_and_wait_sync_and_async(
    jobs: Client, live_api: LiveAPI, key: str, start_fleet: Callable[..., Any]
) -> None:
    start_fleet(processes=1, threads=2)
    submitted = jobs.submit("echo", {"n": 1}, priority=5, max_retries=1, timeout=30)
    assert submitted.created and submitted.status == "queued"
    assert submitted.job.idempotency_key, "a submit without a key gets a generated one"
    job = jobs.wait(submitted.id, timeout=30)
    assert (job.status, job.result, job.priority) == ("completed", {"n": 1}, 5)
    assert job.history is not None and [a.outcome for a in job.history] == ["completed"]
    assert job.finished_at is not None and job.finished_at.tzinfo is not None

    failing = jobs.submit("fail", {"why": "testing"}, max_retries=0)
    with pytest.raises(JobFailed) as failed:
        jobs.wait(failing.id, timeout=30)
    assert failed.value.job.status == "failed" and failed.value.job.last_error

    async def asynchronously() -> tuple[Any, ...]:
        async with AsyncClient(live_api.url, key) as client:
            first = await client.submit("echo", {"n": 2}, queue="default")
            again = await client.submit("echo", {"n": 2}, idempotency_key=first.job.idempotency_key)
            done = await client.wait(first.id, timeout=30)
            listed = [job.id async for job in client.iterate(task="echo", page_size=1)]
            return first, again, done, listed

    first, again, done, listed = asyncio.run(asynchronously())
    assert first.created and not again.created and again.id == first.id
    assert (done.status, done.result) == ("completed", {"n": 2})
    assert listed == [first.id, submitted.id], "newest first, one page of one at a time"


def test_wait_times_out_on_a_job_nobody_runs(jobs: Client) -> None:
    submitted = jobs.submit("echo", {}, queue="nobody-serves-this")
    started = time.monotonic()
    with pytest.raises(WaitTimeout) as timed_out:
        jobs.wait(submitted.id, timeout=0.5, poll=0.1)
    assert 0.5 <= time.monotonic() - started < 5
    assert timed_out.value.job is not None and timed_out.value.job.status == "queued"


def test_submit_many_5000_created_then_existing(jobs: Client) -> None:
    specs = [
        {"task": "echo", "payload": {"i": i}, "queue": "bulk", "idempotency_key": f"bulk-{i}"}
        for i in range(5000)
    ]
    first = jobs.submit_many(specs)
    assert (len(first), first.created, first.existing, first.errors) == (5000, 5000, 0, [])
    assert [item.index for item in first] == list(range(5000))
    assert len(set(first.ids)) == 5000
    assert jobs.list(queue="bulk", limit=1).total == 5000

    again = jobs.submit_many(specs)
    assert (again.created, again.existing) == (0, 5000)
    assert again.ids == first.ids, "each resubmitted job finds its own"

    mixed = jobs.submit_many(
        [
            {"task": "echo", "payload": {"i": 0}, "queue": "bulk", "idempotency_key": "bulk-0"},
            {"task": "echo", "payload": {"other": 1}, "queue": "bulk", "idempotency_key": "bulk-1"},
            {"task": "echo", "priority": 99},
            {"task": "echo", "queue": "bulk"},
        ]
    )
    assert [(item.status, item.created, item.existing) for item in mixed] == [
        (200, False, True),
        (409, False, False),
        (422, False, False),
        (201, True, False),
    ]
    conflict, invalid = mixed[1].error, mixed[2].error
    assert isinstance(conflict, IdempotencyConflict) and conflict.job_id == first[1].id
    assert isinstance(invalid, ValidationError)
    assert invalid.errors[0]["loc"] == ["body", "jobs", 2, "priority"]
    assert jobs.list(queue="bulk", limit=1).total == 5001


def test_iterate_follows_cursors_over_2500_jobs(jobs: Client) -> None:
    made = jobs.submit_many(
        {"task": "echo", "payload": {"i": i}, "queue": "pages"} for i in range(2500)
    )
    assert made.created == 2500
    seen = [job.id for job in jobs.iterate(queue="pages", page_size=100)]
    assert len(seen) == 2500 and set(seen) == set(made.ids), "every job once, none twice"
    assert seen == list(reversed(made.ids)), "newest first: ids are time-ordered"
    first_page = jobs.list(queue="pages", limit=100)
    assert first_page.next_cursor and [job.id for job in first_page.items] == seen[:100]


class DroppingProxy:
    """A TCP proxy in front of the API that passes the first `drops` requests on, lets the API
    answer them (it has committed by then), and closes the client's connection instead of
    relaying the reply. Later connections are relayed both ways."""

    def __init__(self, upstream: str, drops: int = 1) -> None:
        url = httpx.URL(upstream)
        self.upstream = (url.host, url.port or 80)
        self.drops = drops
        self.dropped: list[bytes] = []
        self.connections = 0
        self.lock = threading.Lock()
        self.server = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.server.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        with self.lock:
            self.connections += 1
            drop = self.drops > 0
            self.drops -= drop
        upstream = socket.create_connection(self.upstream)
        forward = threading.Thread(target=_pump, args=(client, upstream), daemon=True)
        forward.start()
        if drop:
            reply = upstream.recv(65536)  # the API replies after its commit
            self.dropped.append(reply)
            client.shutdown(socket.SHUT_RDWR)
        else:
            _pump(upstream, client)
        forward.join(10)
        client.close()
        upstream.close()

    def close(self) -> None:
        self.server.close()


def _pump(source: socket.socket, target: socket.socket) -> None:
    """Copy until `source` ends, then end `target` too (both ways of both connections)."""
    with contextlib.suppress(OSError):
        while data := source.recv(65536):
            target.sendall(data)
    for end in (source, target):
        with contextlib.suppress(OSError):
            end.shutdown(socket.SHUT_RDWR)


def test_a_submit_whose_reply_is_lost_is_retried_into_exactly_one_job(
    jobs: Client, live_api: LiveAPI, key: str
) -> None:
    proxy = DroppingProxy(live_api.url)
    try:
        with Client(proxy.url, key) as through_proxy:
            submitted = through_proxy.submit("echo", {"order": 1001}, queue="lossy")
        # A cancel is not repeatable after a lost reply: the error says it may have happened.
        proxy.drops = 1
        with Client(proxy.url, key) as through_proxy, pytest.raises(TransportError) as lost:
            through_proxy.cancel(submitted.id)
    finally:
        proxy.close()
    assert proxy.dropped[0].startswith(b"HTTP/1.1 201"), "the first try created the job"
    assert submitted.created, "the retry found the job its own lost try created"
    matching = jobs.list(queue="lossy")
    assert matching.total == 1 and matching.items[0].id == submitted.id
    assert lost.value.sent and proxy.dropped[1].startswith(b"HTTP/1.1 200")
    assert jobs.get(submitted.id).status == "cancelled", "cancelled once, not retried"


@pytest.fixture(scope="module")
def tight_api(settings: Settings) -> Iterator[LiveAPI]:
    """An API with a low submit rate limit (POST /jobs) and a small body limit."""
    limits = {"RATE_LIMIT_SUBMIT": "1/second", "MAX_BODY_BYTES": "20000"}
    api = LiveAPI(settings, capture_stderr=False, API_WORKERS="1", **limits)
    yield api
    api.stop()


def test_a_429_is_waited_out(tight_api: LiveAPI, key: str) -> None:
    seen: list[tuple[float, int, str | None]] = []

    class Recording(httpx.HTTPTransport):
        def handle_request(self, request: httpx.Request) -> httpx.Response:
            reply = super().handle_request(request)
            seen.append((time.monotonic(), reply.status_code, reply.headers.get("retry-after")))
            return reply

    with Client(tight_api.url, key, transport=Recording()) as client:
        results = [client.submit("echo", {"i": i}, queue="limited") for i in range(3)]
        assert all(result.created for result in results)
        assert client.list(queue="limited").total == 3
    statuses = [status for _, status, _ in seen]
    assert 429 in statuses, f"the limit was never hit: {statuses}"
    refused = statuses.index(429)
    waited = seen[refused + 1][0] - seen[refused][0]
    assert waited >= float(seen[refused][2] or 0) >= 1, "Retry-After was honoured"

    impatient = Client(tight_api.url, key, retries=RetryPolicy(retries=0))
    with impatient, pytest.raises(RateLimited) as refused_at_once:
        for _ in range(5):
            impatient.submit("echo", {}, queue="limited")
    assert (refused_at_once.value.retry_after or 0) >= 1


def test_a_batch_larger_than_the_api_takes_is_split(tight_api: LiveAPI, key: str) -> None:
    with Client(tight_api.url, key) as client:
        made = client.submit_many(
            [{"task": "echo", "payload": {"text": "x" * 100}, "queue": "split"}] * 500
            + [{"task": "echo", "payload": {"text": "y" * 30000}, "queue": "split"}]
        )
    assert (made.created, len(made)) == (500, 501)
    assert isinstance(made[500].error, PayloadTooLarge) and made[500].status == 413
    assert [item.index for item in made] == list(range(501))


def test_errors_carry_the_problem_json(jobs: Client, live_api: LiveAPI) -> None:
    with pytest.raises(NotFound) as missing:
        jobs.get("0190f1c2-0000-7000-8000-000000000000")
    error = missing.value
    assert (error.status, error.code) == (404, "job-not-found")
    assert error.problem["type"] == "urn:jobfleet:problem:job-not-found" and error.detail
    assert error.request_id and str(error).startswith("404 job-not-found")

    with pytest.raises(ValidationError) as invalid:
        jobs.submit("echo", {}, priority=10)
    assert invalid.value.status == 422 and invalid.value.code == "validation-error"
    assert [e["loc"] for e in invalid.value.errors] == [["body", "priority"]]

    jobs.submit("echo", {"a": 1}, idempotency_key="order-1")
    with pytest.raises(IdempotencyConflict) as conflict:
        jobs.submit("echo", {"a": 2}, idempotency_key="order-1")
    assert conflict.value.job_id == jobs.list(idempotency_key="order-1").items[0].id

    with Client(live_api.url, "jf_not-a-key") as stranger, pytest.raises(Unauthorized) as unknown:
        stranger.get("0190f1c2-0000-7000-8000-000000000000")
    assert unknown.value.code == "unauthorized"


def test_dead_letters_admin_calls_and_the_lease_protocol(jobs: Client) -> None:
    made = jobs.submit_many({"task": "echo", "payload": {"i": i}, "queue": "dl"} for i in range(3))
    assert made.created == 3
    leases = [jobs.lease("dl", "client-test", lease_seconds=30) for _ in range(3)]
    assert all(lease is not None for lease in leases)
    assert jobs.lease("dl", "client-test") is None, "204: nothing left"
    first, second, third = (lease for lease in leases if lease is not None)
    beat = jobs.heartbeat(first.job.id, first.lease_token, lease_seconds=60)
    assert beat.cancel_requested is False and beat.lease_expires_at is not None
    jobs.ack(first.job.id, first.lease_token, {"done": True})
    with pytest.raises(LeaseLost):
        jobs.ack(first.job.id, first.lease_token, {"done": True})
    for lease in (second, third):
        assert jobs.nack(lease.job.id, lease.lease_token, "broken", retry=False) == "failed"

    dead = jobs.dlq_list(queue="dl")
    assert {job.id for job in dead.items} == {second.job.id, third.job.id}
    assert jobs.dlq_replay(second.job.id).status == "queued"
    replayed = jobs.dlq_replay_many(queue="dl")
    assert (replayed.replayed, [job.id for job in replayed.items]) == (1, [third.job.id])
    with pytest.raises(InvalidState) as not_failed:
        jobs.dlq_replay(third.job.id)
    assert not_failed.value.job_status == "queued"
    assert jobs.cancel(third.job.id).status == "cancelled"
    assert jobs.retry(third.job.id).status == "queued"

    assert jobs.pause_queue("dl") == {"queue": "dl", "paused": True}
    assert [q["paused"] for q in jobs.queues() if q["queue"] == "dl"] == [True]
    assert jobs.resume_queue("dl") == {"queue": "dl", "paused": False}
    assert isinstance(jobs.workers(), list)
    with pytest.raises(NotFound) as no_host:
        jobs.set_fleet_size("no-such-host", 1)
    assert no_host.value.code == "host-not-found"
    jobs.delete(first.job.id)
    with pytest.raises(NotFound):
        jobs.get(first.job.id)
