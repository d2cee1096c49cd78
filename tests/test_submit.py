"""POST /jobs: creation, defaults, idempotency, validation, and commit-before-push."""

from __future__ import annotations

import threading
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from app.services.context import Context

PROBLEM_JSON = "application/problem+json"


def submit(client: TestClient, headers: dict[str, str], **body: Any) -> Any:
    return client.post("/jobs", json={"task": "echo", **body}, headers=headers)


def test_submit_creates_a_queued_job_with_defaults(
    client: TestClient, producer: dict[str, str], ctx: Context
) -> None:
    response = submit(client, producer, payload={"to": "a@example.com"}, priority=7)
    assert response.status_code == 201
    job = response.json()
    assert job["status"] == "queued"
    assert job["tenant"] == "acme"
    assert job["queue"] == "default"
    assert job["priority"] == 7
    assert job["payload"] == {"to": "a@example.com"}
    assert job["attempts"] == 0
    assert job["max_retries"] == ctx.settings.default_max_retries
    assert job["timeout_seconds"] == ctx.settings.default_timeout_seconds
    for field in ("created_at", "updated_at", "run_at"):
        assert datetime.fromisoformat(job[field]).utcoffset() == timedelta(0)
    expected = {
        "id", "tenant", "queue", "task", "payload", "priority", "status", "idempotency_key",
        "attempts", "max_retries", "timeout_seconds", "run_at", "result", "last_error",
        "worker_id", "cancel_requested", "created_at", "updated_at", "started_at", "finished_at",
    }  # fmt: skip
    assert set(job) == expected
    ready = ctx.redis.client.lrange(ctx.keys.ready("default", 7, "acme"), 0, -1)
    assert ready == [job["id"].encode()]


def test_delayed_and_future_jobs_start_scheduled(
    client: TestClient, producer: dict[str, str], ctx: Context
) -> None:
    delayed = submit(client, producer, delay_seconds=60).json()
    run_at = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    future = submit(client, producer, run_at=run_at).json()
    past = submit(client, producer, run_at="2020-01-01T00:00:00+00:00").json()
    assert delayed["status"] == "scheduled"
    assert future["status"] == "scheduled"
    assert past["status"] == "queued"
    scores = dict(ctx.redis.client.zrange(ctx.keys.delayed, 0, -1, withscores=True))
    assert set(scores) == {delayed["id"].encode(), future["id"].encode()}
    assert scores[future["id"].encode()] == pytest.approx(
        datetime.fromisoformat(run_at).timestamp(), abs=0.01
    )
    assert ctx.redis.client.lrange(ctx.keys.ready("default", 0, "acme"), 0, -1) == [
        past["id"].encode()
    ]


def test_same_key_same_request_returns_the_job_with_200(
    client: TestClient, producer: dict[str, str], ctx: Context
) -> None:
    first = submit(client, producer, idempotency_key="order-1", payload={"n": 1})
    again = submit(client, producer, idempotency_key="order-1", payload={"n": 1})
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json()["id"] == first.json()["id"]
    # The replay pushes nothing: one id in Redis for one job.
    assert ctx.redis.client.llen(ctx.keys.ready("default", 0, "acme")) == 1


def test_header_key_is_the_same_as_the_body_key(
    client: TestClient, producer: dict[str, str]
) -> None:
    by_header = client.post(
        "/jobs", json={"task": "echo"}, headers={**producer, "Idempotency-Key": "k-7"}
    )
    by_body = submit(client, producer, idempotency_key="k-7")
    assert (by_header.status_code, by_body.status_code) == (201, 200)
    assert by_header.json()["idempotency_key"] == "k-7"
    assert by_body.json()["id"] == by_header.json()["id"]


def test_header_and_body_keys_that_differ_are_rejected(
    client: TestClient, producer: dict[str, str]
) -> None:
    response = client.post(
        "/jobs",
        json={"task": "echo", "idempotency_key": "a"},
        headers={**producer, "Idempotency-Key": "b"},
    )
    assert response.status_code == 422
    assert response.json()["errors"][0]["loc"] == ["header", "Idempotency-Key"]


def test_same_key_different_request_is_409(
    client: TestClient, producer: dict[str, str], ctx: Context
) -> None:
    first = submit(client, producer, idempotency_key="order-2", payload={"n": 1})
    conflict = submit(client, producer, idempotency_key="order-2", payload={"n": 2})
    assert conflict.status_code == 409
    assert conflict.headers["content-type"] == PROBLEM_JSON
    problem = conflict.json()
    assert problem["code"] == "idempotency-conflict"
    assert problem["type"] == "urn:jobfleet:problem:idempotency-conflict"
    assert problem["status"] == 409
    assert problem["job_id"] == first.json()["id"]
    with ctx.db.transaction() as session:
        assert session.scalar(text("SELECT count(*) FROM jobs")) == 1


def test_keys_are_per_tenant(client: TestClient, make_key: Any) -> None:
    acme = {"Authorization": f"Bearer {make_key('acme')}"}
    globex = {"Authorization": f"Bearer {make_key('globex')}"}
    a = submit(client, acme, idempotency_key="shared")
    b = submit(client, globex, idempotency_key="shared", payload={"other": True})
    assert (a.status_code, b.status_code) == (201, 201)
    assert a.json()["id"] != b.json()["id"]


@pytest.mark.parametrize(
    ("body", "where"),
    [
        ({"task": "echo", "priority": 10}, ["body", "priority"]),
        ({"task": "echo", "priority": "high"}, ["body", "priority"]),
        ({"task": ""}, ["body", "task"]),
        ({"payload": {}}, ["body", "task"]),
        ({"task": "echo", "queue": "has space"}, ["body", "queue"]),
        ({"task": "echo", "queue": "{tag}"}, ["body", "queue"]),
        ({"task": "echo", "max_retries": -1}, ["body", "max_retries"]),
        ({"task": "echo", "timeout_seconds": 0}, ["body", "timeout_seconds"]),
        ({"task": "echo", "run_at": "2030-01-01T00:00:00"}, ["body", "run_at"]),
        ({"task": "echo", "unknown_field": 1}, ["body", "unknown_field"]),
        ({"task": "echo", "delay_seconds": 5, "run_at": "2030-01-01T00:00:00Z"}, ["body"]),
        # Postgres cannot store a NUL character: refused here, not as a failed INSERT.
        ({"task": "echo", "payload": {"note": "a\u0000b"}}, ["body", "payload"]),
        ({"task": "echo", "payload": {"a\u0000": 1}}, ["body", "payload"]),
        ({"task": "echo", "idempotency_key": "k\u0000"}, ["body", "idempotency_key"]),
        (["not", "an", "object"], ["body"]),
    ],
)
def test_invalid_requests_get_422_problem_json(
    client: TestClient, producer: dict[str, str], ctx: Context, body: Any, where: list[str]
) -> None:
    response = client.post("/jobs", json=body, headers=producer)
    assert response.status_code == 422
    assert response.headers["content-type"] == PROBLEM_JSON
    problem = response.json()
    assert problem["code"] == "validation-error"
    assert any(e["loc"][: len(where)] == where for e in problem["errors"]), problem
    with ctx.db.transaction() as session:
        assert session.scalar(text("SELECT count(*) FROM jobs")) == 0


def test_malformed_json_gets_422_problem_json(client: TestClient, producer: dict[str, str]) -> None:
    response = client.post(
        "/jobs",
        content=b'{"task": "echo", ',
        headers={**producer, "Content-Type": "application/json"},
    )
    assert response.status_code == 422
    assert response.headers["content-type"] == PROBLEM_JSON
    assert response.json()["errors"][0]["type"] == "json_invalid"


def test_job_row_is_committed_before_its_id_is_in_redis(
    client: TestClient, producer: dict[str, str], ctx: Context
) -> None:
    """A watcher pops each id the moment it lands in Redis and looks the row up at once, from
    its own connection: had the push come before the commit, the row would not be visible."""
    rounds = 25
    seen: list[tuple[str, str | None]] = []
    watcher_ready = threading.Event()

    def watch() -> None:
        client_redis = ctx.redis.client
        watcher_ready.set()
        for _ in range(rounds):
            popped = client_redis.blpop([ctx.keys.ready("default", 0, "acme")], timeout=10)
            assert popped is not None
            job_id = popped[1].decode()
            with ctx.db.transaction() as session:
                status = session.scalar(
                    text("SELECT status FROM jobs WHERE id = :id"), {"id": uuid.UUID(job_id)}
                )
            seen.append((job_id, status))

    thread = threading.Thread(target=watch)
    thread.start()
    watcher_ready.wait(5)
    submitted = [submit(client, producer).json()["id"] for _ in range(rounds)]
    thread.join(30)
    assert [job_id for job_id, _ in seen] == submitted
    assert all(status == "queued" for _, status in seen), seen


def test_redis_down_at_submit_still_commits_the_job(
    settings: Any, ctx: Context, make_key: Any
) -> None:
    """The job is a committed row even when the push fails; the reconciler pushes it later."""
    from app.main import create_app

    broken = settings.model_copy(update={"redis_url": "redis://127.0.0.1:1/0"})
    headers = {"Authorization": f"Bearer {make_key('acme')}"}
    with TestClient(create_app(broken)) as broken_client:
        response = submit(broken_client, headers)
    assert response.status_code == 201
    with ctx.db.transaction() as session:
        status = session.scalar(
            text("SELECT status FROM jobs WHERE id = :id"), {"id": response.json()["id"]}
        )
    assert status == "queued"
