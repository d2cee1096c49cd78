"""Retries, the dead-letter queue, scheduling and cancellation, with a real fleet: burst runs
that end once retries are done, or a fleet whose retries come due at once (FAST_RETRIES)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi.testclient import TestClient

from app.services.context import Context
from app.settings import Settings
from tests.fleet_support import FAST_RETRIES, all_done, attempts, burst, job_row, submit
from tests.helpers import HEAVY, wait_until


def test_flaky_task_succeeds_on_its_third_attempt(settings: Settings, ctx: Context) -> None:
    job_id = submit(ctx, task="flaky", payload={"failures": 2}, max_retries=3)
    assert burst(settings, **FAST_RETRIES) == 0
    row = job_row(ctx, job_id)
    assert row.attempts == 3 and row.result == {"attempt": 3}
    history = attempts(ctx, job_id)
    assert [(a.attempt, a.outcome) for a in history] == [
        (1, "failed"),
        (2, "failed"),
        (3, "completed"),
    ]
    assert "flaky failure 1 of 2" in history[0].error
    assert "flaky failure 2 of 2" in history[1].error


def test_exhausted_jobs_land_in_the_dlq_and_replay_runs_them_again(
    ctx: Context, start_fleet: Any, client: TestClient, producer: dict[str, str]
) -> None:
    start_fleet(processes=1, threads=2, **FAST_RETRIES)
    doomed = [submit(ctx, task="fail", queue="default", max_retries=1) for _ in range(3)]
    survivor = submit(ctx, task="noop")
    wait_until(lambda: all_done(ctx, 4, done=("failed", "completed")), timeout=30)
    assert job_row(ctx, survivor).status == "completed"

    dlq = client.get("/dlq", headers=producer).json()
    assert {j["id"] for j in dlq["items"]} == set(doomed) and dlq["total"] == 3
    for job_id in doomed:
        assert [a.outcome for a in attempts(ctx, job_id)] == ["failed", "failed"]
        assert job_row(ctx, job_id).last_error.startswith("TaskFailed: fail task")

    one = client.post(f"/dlq/{doomed[0]}/replay", headers=producer)
    assert one.status_code == 200 and one.json()["status"] == "queued"
    assert one.json()["attempts"] == 0
    wait_until(lambda: len(attempts(ctx, doomed[0])) == 4, timeout=30)
    wait_until(lambda: job_row(ctx, doomed[0]).status == "failed", timeout=30)

    many = client.post("/dlq/replay", json={"queue": "default", "limit": 10}, headers=producer)
    assert many.status_code == 200 and many.json()["replayed"] == 3
    expected = {doomed[0]: 6, doomed[1]: 4, doomed[2]: 4}
    wait_until(lambda: all(len(attempts(ctx, j)) == n for j, n in expected.items()), timeout=30)
    wait_until(lambda: all_done(ctx, 4, done=("failed", "completed")), timeout=30)

    not_failed = client.post(f"/dlq/{survivor}/replay", headers=producer)
    assert not_failed.status_code == 409
    assert client.delete(f"/dlq/{survivor}", headers=producer).status_code == 409
    assert client.delete(f"/dlq/{doomed[0]}", headers=producer).status_code == 204
    assert client.get(f"/jobs/{doomed[0]}", headers=producer).status_code == 404


def test_replay_many_is_bounded_and_filtered(
    settings: Settings, ctx: Context, client: TestClient, producer: dict[str, str]
) -> None:
    mail = [submit(ctx, task="fail", queue="mail", max_retries=0) for _ in range(4)]
    other = submit(ctx, task="fail", queue="other", max_retries=0)
    assert burst(settings, queues="mail,other") == 0
    assert all_done(ctx, 5, done=("failed",))

    # No fleet runs any more: what a replay queues stays queued for the test to see.
    bounded = client.post("/dlq/replay", json={"queue": "mail", "limit": 2}, headers=producer)
    assert bounded.json()["replayed"] == 2
    assert sorted(job_row(ctx, j).status for j in mail) == ["failed", "failed", "queued", "queued"]
    assert job_row(ctx, other).status == "failed"

    by_id = client.post("/dlq/replay", json={"ids": [other]}, headers=producer).json()
    assert [j["id"] for j in by_id["items"]] == [other]
    too_many = client.post("/dlq/replay", json={"limit": 1001}, headers=producer)
    assert too_many.status_code == 422


@HEAVY
def test_scheduled_jobs_start_within_a_second_of_run_at(ctx: Context, start_fleet: Any) -> None:
    start_fleet(processes=1, threads=2)
    start = datetime.now(UTC)
    planned = {
        submit(ctx, task="noop", run_at=(start + timedelta(seconds=0.5 + i * 0.1)).isoformat()): i
        for i in range(8)
    }
    delayed = submit(ctx, task="noop", delay_seconds=0.8)
    for job_id in planned:
        assert job_row(ctx, job_id).status == "scheduled"
    wait_until(lambda: all_done(ctx, 9), timeout=30)
    for job_id in [*planned, delayed]:
        row = job_row(ctx, job_id)
        lateness = (row.started_at - row.run_at).total_seconds()
        assert 0 <= lateness < 1.0, (job_id, lateness)
    assert ctx.redis.client.zcard(ctx.keys.delayed) == 0


def test_cancel_of_a_running_job_ends_it_cancelled(
    ctx: Context, start_fleet: Any, client: TestClient, producer: dict[str, str]
) -> None:
    start_fleet(processes=1, threads=1, HEARTBEAT_INTERVAL_SECONDS="0.3")
    job = client.post(
        "/jobs", json={"task": "sleep", "payload": {"seconds": 60}}, headers=producer
    ).json()
    wait_until(lambda: job_row(ctx, job["id"]).status == "processing", timeout=30)
    response = client.post(f"/jobs/{job['id']}/cancel", headers=producer)
    assert response.status_code == 202
    assert response.json()["cancel_requested"] is True
    wait_until(lambda: job_row(ctx, job["id"]).status == "cancelled", timeout=15)
    assert [a.outcome for a in attempts(ctx, job["id"])] == ["cancelled"]
    again = client.post(f"/jobs/{job['id']}/cancel", headers=producer)
    assert again.status_code == 409
