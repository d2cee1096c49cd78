"""The HTTP lease protocol: lease, ack, nack, heartbeat, with their status codes."""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

from fastapi.testclient import TestClient

from app.services.context import Context
from tests.fleet_support import attempts, job_row, submit


def worker_headers(make_key: Any) -> dict[str, str]:
    return {"Authorization": f"Bearer {make_key('acme', 'worker')}"}


def lease(client: TestClient, headers: dict[str, str], **body: Any) -> Any:
    return client.post("/queues/default/lease", json={"worker_id": "py-1", **body}, headers=headers)


def test_lease_ack_and_the_fence(client: TestClient, make_key: Any, ctx: Context) -> None:
    headers = worker_headers(make_key)
    assert lease(client, headers).status_code == 204
    low = submit(ctx, task="echo", payload={"n": 1}, priority=1)
    high = submit(ctx, task="echo", payload={"n": 2}, priority=8)

    first = lease(client, headers, lease_seconds=60)
    assert first.status_code == 200
    granted = first.json()
    assert granted["job"]["id"] == high and granted["job"]["status"] == "processing"
    assert granted["job"]["payload"] == {"n": 2} and granted["job"]["attempts"] == 1
    assert job_row(ctx, high).worker_id == "http:py-1"

    wrong = client.post(
        f"/jobs/{high}/ack", json={"lease_token": str(uuid.uuid4()), "result": 1}, headers=headers
    )
    assert wrong.status_code == 409 and wrong.json()["code"] == "lease-lost"
    done = client.post(
        f"/jobs/{high}/ack", json={"lease_token": granted["lease_token"], "result": {"ok": 1}},
        headers=headers,
    )  # fmt: skip
    assert done.status_code == 204
    assert job_row(ctx, high).status == "completed" and job_row(ctx, high).result == {"ok": 1}
    twice = client.post(
        f"/jobs/{high}/ack", json={"lease_token": granted["lease_token"]}, headers=headers
    )
    assert twice.status_code == 409
    missing = client.post(
        f"/jobs/{uuid.uuid4()}/ack", json={"lease_token": str(uuid.uuid4())}, headers=headers
    )
    assert missing.status_code == 404
    assert lease(client, headers).json()["job"]["id"] == low


def test_nack_retries_or_dead_letters(client: TestClient, make_key: Any, ctx: Context) -> None:
    headers = worker_headers(make_key)
    retried = submit(ctx, task="anything", max_retries=2)
    token = lease(client, headers).json()["lease_token"]
    again = client.post(
        f"/jobs/{retried}/nack", json={"lease_token": token, "error": "boom"}, headers=headers
    )
    assert again.json() == {"status": "scheduled"}
    row = job_row(ctx, retried)
    assert row.status == "scheduled" and row.last_error == "boom" and row.run_at > row.started_at
    assert ctx.redis.client.zscore(ctx.keys.delayed, retried) is not None

    final = submit(ctx, task="anything", max_retries=5)
    token = lease(client, headers).json()["lease_token"]
    dead = client.post(
        f"/jobs/{final}/nack", json={"lease_token": token, "error": "bad input", "retry": False},
        headers=headers,
    )  # fmt: skip
    assert dead.json() == {"status": "failed"}
    assert [(a.outcome, a.error) for a in attempts(ctx, final)] == [("failed", "bad input")]


def test_heartbeat_extends_the_lease_and_reports_cancellation(
    client: TestClient, make_key: Any, ctx: Context, producer: dict[str, str]
) -> None:
    headers = worker_headers(make_key)
    job_id = submit(ctx, task="anything")
    token = lease(client, headers, lease_seconds=5).json()["lease_token"]
    before = job_row(ctx, job_id).lease_expires_at
    beat = client.post(
        f"/jobs/{job_id}/heartbeat", json={"lease_token": token, "lease_seconds": 120},
        headers=headers,
    )  # fmt: skip
    assert beat.status_code == 200 and beat.json()["cancel_requested"] is False
    assert job_row(ctx, job_id).lease_expires_at > before
    client.post(f"/jobs/{job_id}/cancel", headers={"Authorization": producer["Authorization"]})
    # The producer is of tenant acme, like the job: the cancel is accepted for the worker to see.
    beat = client.post(f"/jobs/{job_id}/heartbeat", json={"lease_token": token}, headers=headers)
    assert beat.json()["cancel_requested"] is True
    client.post(f"/jobs/{job_id}/ack", json={"lease_token": token}, headers=headers)
    assert job_row(ctx, job_id).status == "cancelled"
    lost = client.post(f"/jobs/{job_id}/heartbeat", json={"lease_token": token}, headers=headers)
    assert lost.status_code == 409


def test_lease_waits_for_work_and_respects_pause(
    client: TestClient, make_key: Any, ctx: Context
) -> None:
    headers = worker_headers(make_key)
    admin = {"Authorization": f"Bearer {make_key('ops', 'admin')}"}
    results: list[Any] = []
    started = threading.Event()

    def long_poll() -> None:
        started.set()
        results.append(lease(client, headers, wait_seconds=10))

    waiter = threading.Thread(target=long_poll)
    waiter.start()
    started.wait(5)
    job_id = submit(ctx, task="anything")
    waiter.join(15)
    assert results[0].status_code == 200 and results[0].json()["job"]["id"] == job_id

    client.post("/queues/default/pause", headers=admin)
    submit(ctx, task="anything")
    began = time.monotonic()
    assert lease(client, headers, wait_seconds=5).status_code == 204
    assert time.monotonic() - began < 4  # a paused queue answers at once, it does not wait


def test_lease_needs_the_worker_scope_and_valid_input(
    client: TestClient, make_key: Any, producer: dict[str, str]
) -> None:
    assert lease(client, producer).status_code == 403
    headers = worker_headers(make_key)
    for body in ({"wait_seconds": 31}, {"lease_seconds": 0}, {"worker_id": ""}):
        assert lease(client, headers, **body).status_code == 422, body


def test_ack_with_a_result_postgres_cannot_store_is_422(
    client: TestClient, make_key: Any, ctx: Context
) -> None:
    headers = worker_headers(make_key)
    job_id = submit(ctx, task="anything")
    token = lease(client, headers).json()["lease_token"]
    bad = client.post(
        f"/jobs/{job_id}/ack", json={"lease_token": token, "result": "a\u0000b"}, headers=headers
    )
    assert bad.status_code == 422 and bad.json()["errors"][0]["loc"] == ["body", "result"]
    assert job_row(ctx, job_id).status == "processing"  # still leased: the worker may nack
