"""POST /jobs/batch: one result per job, in order, each with its own status code."""

from __future__ import annotations

from fastapi.testclient import TestClient
from sqlalchemy import text

from app.services.context import Context


def test_each_job_of_a_batch_gets_its_own_result_in_order(
    client: TestClient, producer: dict[str, str], ctx: Context
) -> None:
    earlier = client.post(
        "/jobs", json={"task": "echo", "idempotency_key": "k-old", "payload": 1}, headers=producer
    ).json()
    batch = [
        {"task": "echo", "payload": {"n": 0}},
        {"task": "echo", "priority": 42},
        {"task": "echo", "idempotency_key": "k-old", "payload": 1},
        {"task": "echo", "idempotency_key": "k-old", "payload": 2},
        {"task": "echo", "idempotency_key": "k-new", "payload": 3},
        {"task": "echo", "idempotency_key": "k-new", "payload": 3},
        {"task": "echo", "idempotency_key": "k-new", "payload": 4},
        {"task": "later", "delay_seconds": 60},
    ]
    response = client.post("/jobs/batch", json={"jobs": batch}, headers=producer)
    assert response.status_code == 200
    body = response.json()
    results = body["results"]
    assert [r["status"] for r in results] == [201, 422, 200, 409, 201, 200, 409, 201]
    assert body["created"] == 3
    assert results[1]["problem"]["errors"][0]["loc"] == ["body", "jobs", 1, "priority"]
    assert results[2]["id"] == earlier["id"]
    assert results[3]["problem"]["code"] == "idempotency-conflict"
    assert results[5]["id"] == results[4]["id"]
    assert results[7]["job_status"] == "scheduled"
    ready = ctx.redis.client.lrange(ctx.keys.ready("default", 0, "acme"), 0, -1)
    assert [i.decode() for i in ready] == [
        earlier["id"],
        results[0]["id"],
        results[4]["id"],
    ]
    assert ctx.redis.client.zscore(ctx.keys.delayed, results[7]["id"]) is not None


def test_a_thousand_jobs_in_one_request(
    client: TestClient, producer: dict[str, str], ctx: Context
) -> None:
    jobs = [{"task": "noop", "payload": {"i": i}, "priority": i % 3} for i in range(1000)]
    response = client.post("/jobs/batch", json={"jobs": jobs}, headers=producer)
    assert response.status_code == 200 and response.json()["created"] == 1000
    ids = [r["id"] for r in response.json()["results"]]
    with ctx.db.transaction() as session:
        assert session.scalar(text("SELECT count(*) FROM jobs")) == 1000
    for priority in range(3):
        listed = [
            i.decode()
            for i in ctx.redis.client.lrange(ctx.keys.ready("default", priority, "acme"), 0, -1)
        ]
        assert listed == ids[priority::3]  # FIFO within each priority


def test_batch_size_is_bounded(client: TestClient, producer: dict[str, str]) -> None:
    too_many = {"jobs": [{"task": "noop"}] * 1001}
    assert client.post("/jobs/batch", json=too_many, headers=producer).status_code == 422
    assert client.post("/jobs/batch", json={"jobs": []}, headers=producer).status_code == 422
    assert client.post("/jobs/batch", json=[{"task": "noop"}], headers=producer).status_code == 422
