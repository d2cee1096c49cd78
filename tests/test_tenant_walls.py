"""Tenant walls of the HTTP lease protocol, against a live API process: a worker key leases,
acks, nacks and heartbeats its own tenant's jobs only."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from app.services.context import Context
from tests.fleet_support import job_row
from tests.helpers import LiveAPI

pytestmark = pytest.mark.live

QUEUE = "walled"


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def submit(api: LiveAPI, key: str, payload: Any, queue: str = QUEUE) -> str:
    reply = httpx.post(
        f"{api.url}/jobs",
        json={"task": "remote", "payload": payload, "queue": queue},
        headers=bearer(key),
    )
    assert reply.status_code == 201, reply.text
    return str(reply.json()["id"])


def lease(api: LiveAPI, key: str, wait: float = 0, queue: str = QUEUE) -> httpx.Response:
    return httpx.post(
        f"{api.url}/queues/{queue}/lease",
        json={"worker_id": "w-1", "wait_seconds": wait},
        headers=bearer(key),
        timeout=wait + 10,
    )


def lease_calls(api: LiveAPI, key: str, job_id: str, token: str) -> list[httpx.Response]:
    """ack, nack and heartbeat of `job_id` with `token`, in that order."""
    return [
        httpx.post(f"{api.url}/jobs/{job_id}/{call}", json=body, headers=bearer(key))
        for call, body in (
            ("ack", {"lease_token": token, "result": "forged"}),
            ("nack", {"lease_token": token, "error": "forged"}),
            ("heartbeat", {"lease_token": token}),
        )
    ]


def test_a_worker_key_never_reaches_another_tenants_jobs(
    live_api: LiveAPI, ctx: Context, make_key: Callable[..., str]
) -> None:
    a_worker, b_worker = make_key("tenant-a", "worker"), make_key("tenant-b", "worker")
    b_producer = make_key("tenant-b", "producer")
    b_job = submit(live_api, b_producer, {"secret": "b's"})

    # A sees nothing on a queue that holds only B's job, waiting or not.
    assert lease(live_api, a_worker).status_code == 204
    assert lease(live_api, a_worker, wait=0.5).status_code == 204
    # B's job id answers A exactly as an unknown id does, whatever the token.
    unknown = lease_calls(live_api, a_worker, str(uuid.uuid4()), str(uuid.uuid4()))
    for reply in (*unknown, *lease_calls(live_api, a_worker, b_job, str(uuid.uuid4()))):
        assert reply.status_code == 404 and reply.json()["code"] == "job-not-found", reply.text
    assert job_row(ctx, b_job).status == "queued"

    # B's own worker leases it as usual; even B's real token does nothing in A's hands.
    granted = lease(live_api, b_worker)
    assert granted.status_code == 200 and granted.json()["job"]["id"] == b_job
    token = granted.json()["lease_token"]
    for reply in lease_calls(live_api, a_worker, b_job, token):
        assert reply.status_code == 404 and reply.json()["code"] == "job-not-found", reply.text
    row = job_row(ctx, b_job)
    assert row.status == "processing" and row.result is None and row.last_error is None

    acked = httpx.post(
        f"{live_api.url}/jobs/{b_job}/ack",
        json={"lease_token": token, "result": {"by": "b"}},
        headers=bearer(b_worker),
    )
    assert acked.status_code == 204
    job = httpx.get(f"{live_api.url}/jobs/{b_job}", headers=bearer(b_producer)).json()
    assert job["status"] == "completed" and job["result"] == {"by": "b"}


def test_an_admin_key_leases_across_tenants_in_turn(
    live_api: LiveAPI, make_key: Callable[..., str]
) -> None:
    admin = make_key("ops", "admin")
    a_jobs = [submit(live_api, make_key("tenant-a", "producer"), {"n": n}) for n in range(2)]
    b_jobs = [submit(live_api, make_key("tenant-b", "producer"), {"n": n}) for n in range(2)]
    leased = [lease(live_api, admin).json()["job"] for _ in range(4)]
    # Tenants take turns; each tenant's jobs come in the order they were submitted.
    assert [job["id"] for job in leased] == [a_jobs[0], b_jobs[0], a_jobs[1], b_jobs[1]]
    assert lease(live_api, admin).status_code == 204


def test_a_long_poll_waits_its_full_time_and_wakes_only_for_its_tenant(
    live_api: LiveAPI, ctx: Context, make_key: Callable[..., str]
) -> None:
    a_worker, a_producer = make_key("tenant-a", "worker"), make_key("tenant-a", "producer")
    b_producer = make_key("tenant-b", "producer")
    replies: list[tuple[httpx.Response, float]] = []

    def poll() -> None:
        began = time.monotonic()
        reply = lease(live_api, a_worker, wait=20, queue="idle")
        replies.append((reply, time.monotonic() - began))

    waiter = threading.Thread(target=poll)
    waiter.start()
    # Another tenant's job arriving meanwhile does not end A's wait, nor reach A.
    b_job = submit(live_api, b_producer, {}, queue="idle")
    waiter.join(40)
    reply, waited = replies[0]
    assert reply.status_code == 204 and reply.content == b""
    assert waited >= 19.5, waited  # the whole wait_seconds, across several wait slices
    assert job_row(ctx, b_job).status == "queued"

    # A's own job wakes A's long poll.
    replies.clear()
    waiter = threading.Thread(target=poll)
    waiter.start()
    a_job = submit(live_api, a_producer, {}, queue="idle")
    waiter.join(40)
    reply, _ = replies[0]
    assert reply.status_code == 200 and reply.json()["job"]["id"] == a_job
