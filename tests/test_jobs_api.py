"""Reading and steering jobs: get with history, list, cancel, retry, delete."""

from __future__ import annotations

import uuid
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import text

from app.services.context import Context


def new_job(client: TestClient, headers: dict[str, str], **body: Any) -> dict[str, Any]:
    response = client.post("/jobs", json={"task": "echo", **body}, headers=headers)
    assert response.status_code == 201, response.text
    job: dict[str, Any] = response.json()
    return job


def set_status(ctx: Context, job_id: str, status: str) -> None:
    with ctx.db.transaction() as session:
        session.execute(
            text("UPDATE jobs SET status = :s WHERE id = :id"), {"s": status, "id": job_id}
        )


def test_get_returns_the_job_and_its_attempts_in_order(
    client: TestClient, producer: dict[str, str], ctx: Context
) -> None:
    job = new_job(client, producer)
    with ctx.db.transaction() as session:
        for attempt, outcome, error in [(1, "failed", "boom"), (2, "completed", None)]:
            session.execute(
                text(
                    "INSERT INTO job_attempts (job_id, attempt, worker_id, started_at, "
                    "finished_at, outcome, error) VALUES (:id, :n, 'w1', now(), now(), :o, :e)"
                ),
                {"id": job["id"], "n": attempt, "o": outcome, "e": error},
            )
    response = client.get(f"/jobs/{job['id']}", headers=producer)
    assert response.status_code == 200
    detail = response.json()
    assert detail["id"] == job["id"]
    assert [(h["attempt"], h["outcome"], h["error"]) for h in detail["history"]] == [
        (1, "failed", "boom"),
        (2, "completed", None),
    ]
    assert detail["history"][0]["worker_id"] == "w1"


def test_get_unknown_job_is_404_problem(client: TestClient, producer: dict[str, str]) -> None:
    response = client.get(f"/jobs/{uuid.uuid4()}", headers=producer)
    assert response.status_code == 404
    assert response.json()["code"] == "job-not-found"
    assert client.get("/jobs/not-a-uuid", headers=producer).status_code == 422


def test_list_filters_and_paginates_newest_first(
    client: TestClient, producer: dict[str, str]
) -> None:
    ids = [new_job(client, producer, queue="mail" if i % 2 else "default")["id"] for i in range(7)]
    cancelled = client.post(f"/jobs/{ids[0]}/cancel", headers=producer).json()
    assert cancelled["status"] == "cancelled"

    page = client.get("/jobs", params={"limit": 3}, headers=producer).json()
    assert page["total"] == 7 and page["limit"] == 3 and page["offset"] == 0
    assert [j["id"] for j in page["items"]] == ids[::-1][:3]

    second = client.get("/jobs", params={"limit": 3, "offset": 3}, headers=producer).json()
    assert [j["id"] for j in second["items"]] == ids[::-1][3:6]

    by_cursor = client.get(
        "/jobs", params={"limit": 3, "cursor": page["next_cursor"]}, headers=producer
    ).json()
    assert [j["id"] for j in by_cursor["items"]] == ids[::-1][3:6]

    mail = client.get("/jobs", params={"queue": "mail"}, headers=producer).json()
    assert {j["id"] for j in mail["items"]} == set(ids[1::2]) and mail["total"] == 3
    only_cancelled = client.get("/jobs", params={"status": "cancelled"}, headers=producer).json()
    assert [j["id"] for j in only_cancelled["items"]] == [ids[0]]
    by_task = client.get("/jobs", params={"task": "nothing"}, headers=producer).json()
    assert by_task["items"] == [] and by_task["total"] == 0


def test_list_rejects_bad_parameters(client: TestClient, producer: dict[str, str]) -> None:
    for params in ({"limit": 0}, {"limit": 101}, {"offset": -1}, {"status": "sleeping"}):
        response = client.get("/jobs", params=params, headers=producer)
        assert response.status_code == 422, params
    bad_cursor = client.get("/jobs", params={"cursor": "!!!"}, headers=producer)
    assert bad_cursor.status_code == 422
    assert bad_cursor.json()["errors"][0]["loc"] == ["query", "cursor"]


def test_cancel_waiting_jobs_and_refuse_terminal_ones(
    client: TestClient, producer: dict[str, str]
) -> None:
    queued = new_job(client, producer)
    scheduled = new_job(client, producer, delay_seconds=3600)
    for job in (queued, scheduled):
        response = client.post(f"/jobs/{job['id']}/cancel", headers=producer)
        assert response.status_code == 200
        assert response.json()["status"] == "cancelled"
        assert response.json()["finished_at"] is not None
    again = client.post(f"/jobs/{queued['id']}/cancel", headers=producer)
    assert again.status_code == 409
    assert again.json()["code"] == "invalid-state"
    assert again.json()["job_status"] == "cancelled"
    missing = client.post(f"/jobs/{uuid.uuid4()}/cancel", headers=producer)
    assert missing.status_code == 404


def test_cancel_of_a_completed_job_is_409(
    client: TestClient, producer: dict[str, str], ctx: Context
) -> None:
    job = new_job(client, producer)
    set_status(ctx, job["id"], "completed")
    assert client.post(f"/jobs/{job['id']}/cancel", headers=producer).status_code == 409


def test_retry_requeues_failed_and_cancelled_jobs(
    client: TestClient, producer: dict[str, str], ctx: Context
) -> None:
    failed = new_job(client, producer, priority=3)
    set_status(ctx, failed["id"], "failed")
    cancelled = new_job(client, producer, priority=3)
    client.post(f"/jobs/{cancelled['id']}/cancel", headers=producer)
    ctx.redis.client.delete(ctx.keys.ready("default", 3, "acme"))

    for job in (failed, cancelled):
        response = client.post(f"/jobs/{job['id']}/retry", headers=producer)
        assert response.status_code == 200
        assert response.json()["status"] == "queued"
        assert response.json()["attempts"] == 0
        assert response.json()["finished_at"] is None
    ready = ctx.redis.client.lrange(ctx.keys.ready("default", 3, "acme"), 0, -1)
    assert ready == [failed["id"].encode(), cancelled["id"].encode()]

    queued_again = client.post(f"/jobs/{failed['id']}/retry", headers=producer)
    assert queued_again.status_code == 409
    assert client.post(f"/jobs/{uuid.uuid4()}/retry", headers=producer).status_code == 404


def test_delete_removes_a_job_unless_it_is_processing(
    client: TestClient, producer: dict[str, str], ctx: Context
) -> None:
    job = new_job(client, producer)
    response = client.delete(f"/jobs/{job['id']}", headers=producer)
    assert response.status_code == 204
    assert response.content == b""
    assert client.get(f"/jobs/{job['id']}", headers=producer).status_code == 404
    assert client.delete(f"/jobs/{job['id']}", headers=producer).status_code == 404

    running = new_job(client, producer)
    set_status(ctx, running["id"], "processing")
    refused = client.delete(f"/jobs/{running['id']}", headers=producer)
    assert refused.status_code == 409
    assert client.get(f"/jobs/{running['id']}", headers=producer).status_code == 200


def test_unknown_route_and_method_are_problem_json(
    client: TestClient, producer: dict[str, str]
) -> None:
    missing = client.get("/nowhere", headers=producer)
    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/problem+json"
    wrong_method = client.put("/jobs", headers=producer)
    assert wrong_method.status_code == 405
    assert wrong_method.json()["code"] == "method-not-allowed"
