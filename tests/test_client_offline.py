"""The Python client without a server: its retry policy and request bodies (pure functions),
and jobfleet.testing's FakeClient as an application's tests would use it."""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, datetime, timedelta
from unittest.mock import ANY

import httpx
import pytest
from jobfleet import Client, IdempotencyConflict, JobFailed, NotFound, ValidationError, WaitTimeout
from jobfleet._protocol import Protocol, RetryPolicy, job_body, retry_after_seconds
from jobfleet.testing import AsyncFakeClient, FakeClient


def test_backoff_is_capped_jittered_and_honours_retry_after() -> None:
    policy = RetryPolicy(retries=4, backoff=0.5, backoff_cap=2.0, max_retry_after=30)
    rand = random.Random(7)
    for retry, ceiling in [(1, 0.5), (2, 1.0), (3, 2.0), (4, 2.0)]:
        waits = [policy.delay(retry, None, rand) for _ in range(200)]
        assert all(w is not None and 0 <= w <= ceiling for w in waits)
        assert max(w or 0 for w in waits) > ceiling / 2, "full jitter spreads over the range"
    assert policy.delay(5, None, rand) is None, "no more than `retries` retries"
    after = policy.delay(1, 3.0, rand)
    assert after is not None and 3.0 <= after <= 3.5, "at least Retry-After"
    assert policy.delay(1, 31.0, rand) is None, "a Retry-After beyond the policy is not waited"


def test_which_failures_are_retried() -> None:
    protocol = Protocol(retry=RetryPolicy(retries=3, backoff=0.01), rand=random.Random(1))

    def wait(reply: httpx.Response | httpx.TransportError, repeatable: bool) -> float | None:
        return protocol._retry_wait(reply, 1, repeatable)

    unavailable = httpx.Response(503, headers={"Retry-After": "1"})
    assert (wait(unavailable, False) or 0) >= 1, "a 503 applied nothing: always retried"
    assert wait(httpx.Response(429), False) is not None
    refused = httpx.ConnectError("refused")
    assert wait(refused, False) is not None, "never sent: always retried"
    for maybe_applied in (httpx.ReadError("reset"), httpx.Response(502), httpx.Response(504)):
        assert wait(maybe_applied, True) is not None, "repeatable calls are retried"
        assert wait(maybe_applied, False) is None, "a cancel or replay is not sent twice"
    for final in (httpx.Response(500), httpx.Response(404), httpx.Response(409)):
        assert wait(final, True) is None
    assert protocol._retry_wait(unavailable, 4, True) is None, "at most `retries` retries"


def test_retry_after_in_seconds_or_as_a_date() -> None:
    now = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
    assert retry_after_seconds("2") == 2.0
    assert retry_after_seconds("Thu, 01 Jan 2026 12:00:05 GMT", now) == 5.0
    assert retry_after_seconds("Thu, 01 Jan 2026 11:00:00 GMT", now) == 0.0
    assert retry_after_seconds("soon") is None and retry_after_seconds(None) is None


def test_submit_bodies_carry_a_key_and_the_api_field_names() -> None:
    body, generated = job_body("send", {"to": "a"}, {"delay": timedelta(minutes=2), "timeout": 30})
    assert generated and body["idempotency_key"].startswith("jf-client:")
    assert body == {
        "task": "send",
        "payload": {"to": "a"},
        "delay_seconds": 120.0,
        "timeout_seconds": 30,
        "idempotency_key": body["idempotency_key"],
    }
    other, _ = job_body("send", {"to": "a"})
    assert other["idempotency_key"] != body["idempotency_key"], "a new key per submit"
    given, generated = job_body("send", None, {"idempotency_key": "order-1", "queue": "mail"})
    assert not generated and given == {
        "task": "send",
        "queue": "mail",
        "idempotency_key": "order-1",
    }
    with pytest.raises(ValueError, match="timezone-aware"):
        job_body("send", None, {"run_at": datetime(2030, 1, 1)})
    with pytest.raises(TypeError, match="colour"):
        job_body("send", None, {"colour": "red"})


def test_the_client_reads_its_url_and_key_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("JOBFLEET_URL", "http://jobs.example:8000/")
    monkeypatch.setenv("JOBFLEET_KEY", "jf_secret")
    with Client() as client:
        assert (client.url, client.key) == ("http://jobs.example:8000", "jf_secret")
    with Client("http://other:1", "jf_other") as client:
        assert (client.url, client.key) == ("http://other:1", "jf_other")


def signup(jobs: Client, email: str) -> str:
    """Application code under test: it submits a welcome mail."""
    return jobs.submit("send_email", {"to": email}, queue="mail", idempotency_key=email).id


def test_fake_client_records_submits_for_assert_submitted() -> None:
    jobs = FakeClient()
    job_id = signup(jobs, "a@example.com")
    assert signup(jobs, "a@example.com") == job_id, "the same key finds the same job"
    found = jobs.assert_submitted("send_email", {"to": "a@example.com"}, queue="mail")
    assert found.id == job_id and found.status == "queued"
    jobs.assert_submitted("send_email", ANY, idempotency_key="a@example.com")
    assert len(jobs.submitted) == 1
    with pytest.raises(AssertionError, match=r"send_email \{\"to\": \"a@example.com\"\}"):
        jobs.assert_submitted("send_email", {"to": "b@example.com"})
    with pytest.raises(AssertionError, match="1 job"):
        jobs.assert_not_submitted("send_email")
    jobs.assert_not_submitted("other_task")

    with pytest.raises(IdempotencyConflict) as conflict:
        jobs.submit("send_email", {"to": "someone else"}, idempotency_key="a@example.com")
    assert conflict.value.job_id == job_id
    with pytest.raises(ValidationError) as invalid:
        jobs.submit("send_email", priority=12)
    assert invalid.value.errors[0]["loc"] == ["body", "priority"]
    with pytest.raises(NotFound):
        jobs.get("no-such-job")


def test_fake_client_batches_pages_and_finishes_jobs() -> None:
    jobs = FakeClient()
    made = jobs.submit_many([{"task": "resize", "payload": {"n": i}} for i in range(250)])
    assert (made.created, made.existing) == (250, 0)
    assert [job.id for job in jobs.iterate(task="resize", page_size=100)] == made.ids[::-1]
    with pytest.raises(ValidationError, match="does not filter by error"):
        jobs.list(error="timeout")
    later = jobs.submit("report", delay=60)
    assert later.status == "scheduled"

    with pytest.raises(WaitTimeout):
        jobs.wait(later.id)
    jobs.complete(made[0].id or "", {"ok": True})
    assert jobs.wait(made[0].id or "").result == {"ok": True}
    jobs.fail(made[1].id or "", "no such image")
    with pytest.raises(JobFailed, match="no such image"):
        jobs.wait(made[1].id or "")
    assert jobs.retry(made[1].id or "").status == "queued"
    assert jobs.cancel(later.id).status == "cancelled"


def test_async_fake_client() -> None:
    async def scenario() -> None:
        async with AsyncFakeClient() as jobs:
            submitted = await jobs.submit("send_email", {"to": "c@example.com"})
            assert submitted.created
            jobs.complete(submitted.id, "sent")
            assert (await jobs.wait(submitted.id)).result == "sent"
            jobs.assert_submitted("send_email", {"to": "c@example.com"})

    asyncio.run(scenario())
