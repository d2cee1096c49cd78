"""The worker fleet with real processes: throughput, order, exactly-once, supervision,
scaling, graceful shutdown, pause, timeouts. Tests whose jobs are all submitted up front run
the fleet in burst mode, to its end."""

from __future__ import annotations

import os
import signal
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import text

from app.dispatch.push import Announcement, announce
from app.services.context import Context
from app.settings import Settings
from devtools.processes import cmdline
from tests.fleet_support import (
    FAST_RETRIES,
    all_done,
    attempts,
    burst,
    job_row,
    runs_per_job,
    statuses,
    submit,
    workers_of,
)
from tests.helpers import wait_until


def test_500_jobs_over_three_queues_complete_exactly_once(settings: Settings, ctx: Context) -> None:
    queues = ["emails", "reports", "default"]
    ids = [submit(ctx, queue=queues[i % 3], priority=i % 10) for i in range(500)]
    assert burst(settings, processes=2, threads=2, timeout=120, queues=",".join(queues)) == 0
    assert all_done(ctx, 500)
    runs = runs_per_job(ctx)
    assert set(runs) == set(ids)
    assert set(runs.values()) == {1}
    with ctx.db.transaction() as session:
        per_job = session.execute(
            text(
                "SELECT count(*), count(DISTINCT job_id), min(attempt), max(attempt) "
                "FROM job_attempts"
            )
        ).one()
    assert tuple(per_job) == (500, 500, 1, 1)


def test_higher_priority_first_and_fifo_within_a_priority(settings: Settings, ctx: Context) -> None:
    plan = [0, 5, 9, 5, 0, 9, 3, 9, 0]
    ids = [submit(ctx, task="noop", priority=p) for p in plan]
    assert burst(settings, processes=1, threads=1) == 0
    assert all_done(ctx, len(plan))
    order = sorted(ids, key=lambda i: job_row(ctx, i).started_at)
    expected = [ids[i] for i in sorted(range(len(plan)), key=lambda i: (-plan[i], i))]
    assert order == expected


def test_a_duplicate_id_in_redis_runs_the_job_once(ctx: Context, start_fleet: Any) -> None:
    job_id = submit(ctx)
    duplicate = Announcement(job_id, "default", 0, "acme", None)
    announce(ctx.redis.client, ctx.keys, [duplicate, duplicate])
    assert ctx.redis.client.llen(ctx.keys.ready("default", 0, "acme")) == 3
    fleet = start_fleet(processes=1, threads=2)
    wait_until(lambda: all_done(ctx, 1))
    wait_until(lambda: ctx.redis.client.llen(ctx.keys.ready("default", 0, "acme")) == 0)
    # At least the two duplicates were dropped (a first-start rebuild may add one more).
    wait_until(lambda: sum(w["skipped"] for w in workers_of(ctx, fleet.host)) >= 2)
    assert runs_per_job(ctx) == {job_id: 1}
    assert job_row(ctx, job_id).attempts == 1
    assert len(attempts(ctx, job_id)) == 1


def test_sigkill_of_a_busy_child_is_replaced_and_its_job_rerun(
    ctx: Context, start_fleet: Any
) -> None:
    # The lost attempt's retry comes due at once: no real backoff to wait out.
    fleet = start_fleet(processes=2, threads=1, **FAST_RETRIES)
    victim_job = submit(ctx, payload={"first_run_seconds": 60})
    busy = wait_until(
        lambda: [w for w in workers_of(ctx, fleet.host) if victim_job in w["current_jobs"]],
        timeout=30,
    )[0]
    os.kill(busy["pid"], signal.SIGKILL)
    # A new process takes the dead one's place ...
    wait_until(
        lambda: len([w for w in workers_of(ctx, fleet.host) if w["pid"] != busy["pid"]]) == 2,
        timeout=30,
    )
    # ... the lost attempt is recorded and the job runs again, and the fleet goes on.
    others = [submit(ctx) for _ in range(20)]
    wait_until(lambda: all(job_row(ctx, j).status == "completed" for j in others), timeout=60)
    wait_until(lambda: job_row(ctx, victim_job).status == "completed", timeout=30)
    assert runs_per_job(ctx)[victim_job] == 2
    assert [a.outcome for a in attempts(ctx, victim_job)] == ["lost", "completed"]


def test_the_first_children_are_forked_and_a_replacement_is_spawned(
    ctx: Context, start_fleet: Any
) -> None:
    """The children a fleet starts with are forks of its manager (they share its command
    line), so they claim without importing everything again; a child that replaces a dead one
    is spawned (a fresh interpreter, multiprocessing's spawn_main), once the manager has
    threads and connections a fork must not copy. Both kinds run jobs."""
    fleet = start_fleet(processes=2, threads=1)
    first = {w["pid"] for w in workers_of(ctx, fleet.host)}
    assert {cmdline(pid) for pid in first} == {cmdline(fleet.process.pid)}
    os.kill(min(first), signal.SIGKILL)
    fresh = wait_until(
        lambda: [w["pid"] for w in workers_of(ctx, fleet.host) if w["pid"] not in first],
        timeout=30,
    )
    assert "spawn_main" in cmdline(fresh[0])
    # Two jobs long enough that each process (one loop each) holds one: both kinds run jobs.
    jobs = [submit(ctx, payload={"seconds": 2}) for _ in range(2)]
    wait_until(lambda: all(job_row(ctx, j).status == "completed" for j in jobs), timeout=60)
    by_pid = {w["pid"]: w["worker_id"] for w in workers_of(ctx, fleet.host)}
    survivor = max(first)
    assert {job_row(ctx, j).worker_id for j in jobs} == {by_pid[survivor], by_pid[fresh[0]]}


def test_fleet_follows_its_desired_size(
    ctx: Context, start_fleet: Any, client: TestClient, make_key: Any
) -> None:
    admin = {"Authorization": f"Bearer {make_key('ops', 'admin')}"}
    fleet = start_fleet(processes=2, threads=1)

    def listed() -> int:
        items = client.get("/workers", headers=admin).json()["items"]
        return len([w for w in items if w["host"] == fleet.host and w["kind"] == "worker"])

    assert listed() == 2
    for size in (4, 1):
        response = client.put(f"/fleet/{fleet.host}/size", json={"processes": size}, headers=admin)
        assert response.status_code == 200
        wait_until(lambda size=size: listed() == size, timeout=60)
    manager = [
        w
        for w in client.get("/workers", headers=admin).json()["items"]
        if w["host"] == fleet.host and w["kind"] == "manager"
    ]
    assert manager and manager[0]["desired"] == 1
    assert (
        client.put(f"/fleet/{fleet.host}/size", json={"processes": -1}, headers=admin).status_code
        == 422
    )
    # Forgetting the size brings the manager back to the size it was started with.
    assert client.delete(f"/fleet/{fleet.host}/size", headers=admin).status_code == 204
    wait_until(lambda: listed() == 2, timeout=60)


def test_sigterm_lets_running_jobs_finish_and_exits_zero(ctx: Context, start_fleet: Any) -> None:
    fleet = start_fleet(processes=2, threads=2, SHUTDOWN_GRACE_SECONDS="20")
    ids = [submit(ctx, payload={"seconds": 1.5}) for _ in range(20)]
    wait_until(lambda: statuses(ctx).get("processing", 0) == 4, timeout=30)
    running = {j for j in ids if job_row(ctx, j).status == "processing"}
    fleet.process.send_signal(signal.SIGTERM)
    assert fleet.process.wait(timeout=20) == 0
    rows = {j: job_row(ctx, j) for j in ids}
    # A job that was running finished. One that a loop had only just claimed when the signal
    # came (between its claim and its start) was handed back untouched instead.
    for job_id in running:
        row = rows[job_id]
        assert row.status == "completed" or (row.status, row.attempts) == ("queued", 0), row
    assert any(rows[j].status == "completed" for j in running)
    assert not [j for j, r in rows.items() if r.status == "processing"]
    waiting = {j for j, r in rows.items() if r.status == "queued"}
    in_redis = {
        i.decode() for i in ctx.redis.client.lrange(ctx.keys.ready("default", 0, "acme"), 0, -1)
    }
    assert waiting == in_redis  # nothing popped and dropped on the way out
    assert len(waiting) + len([r for r in rows.values() if r.status == "completed"]) == 20


def test_pause_stops_pickup_and_resume_restarts_it(
    ctx: Context, start_fleet: Any, client: TestClient, make_key: Any
) -> None:
    admin = {"Authorization": f"Bearer {make_key('ops', 'admin')}"}
    fleet = start_fleet(processes=1, threads=1, queues="urgent,default")
    assert client.post("/queues/urgent/pause", headers=admin).json() == {
        "queue": "urgent",
        "paused": True,
    }
    wait_until(lambda: all("urgent" in w["paused_queues"] for w in workers_of(ctx, fleet.host)))
    held = submit(ctx, queue="urgent", priority=9)
    passing = submit(ctx, queue="default", priority=0)
    # The single loop would pop the urgent p9 id first were the queue not paused.
    wait_until(lambda: job_row(ctx, passing).status == "completed", timeout=30)
    assert job_row(ctx, held).status == "queued"
    listed = {q["queue"]: q for q in client.get("/queues", headers=admin).json()}
    assert listed["urgent"]["paused"] is True
    assert listed["urgent"]["depth"]["queued"] == 1
    assert listed["urgent"]["oldest_waiting_seconds"] >= 0
    assert listed["default"]["depth"]["completed"] == 1

    assert client.post("/queues/urgent/resume", headers=admin).json()["paused"] is False
    wait_until(lambda: job_row(ctx, held).status == "completed", timeout=30)


def test_soft_and_hard_timeouts_fail_the_job_with_timeout(ctx: Context, start_fleet: Any) -> None:
    fleet = start_fleet(processes=1, threads=2, HARD_TIMEOUT_GRACE_SECONDS="1")
    soft = submit(ctx, task="sleep", payload={"seconds": 30}, timeout_seconds=1, max_retries=0)
    hard = submit(ctx, task="stubborn", payload={"seconds": 30}, timeout_seconds=1, max_retries=0)
    wait_until(lambda: job_row(ctx, soft).status == "failed", timeout=30)
    wait_until(lambda: job_row(ctx, hard).status == "failed", timeout=30)
    for job_id in (soft, hard):
        row = job_row(ctx, job_id)
        assert row.last_error.startswith("timeout")
        assert [a.outcome for a in attempts(ctx, job_id)] == ["timeout"]
    # The killed process was replaced and the fleet still runs jobs.
    after = submit(ctx, task="noop")
    wait_until(lambda: job_row(ctx, after).status == "completed", timeout=30)
    assert len(workers_of(ctx, fleet.host)) == 1


def test_unknown_tasks_and_unserialisable_results_fail_at_once(
    settings: Settings, ctx: Context
) -> None:
    unknown = submit(ctx, task="no_such_task", max_retries=5)
    bad_result = submit(ctx, task="not_json")
    assert burst(settings, processes=1, threads=1) == 0
    assert all_done(ctx, 2, done=("failed",))
    assert job_row(ctx, unknown).attempts == 1
    assert "no task named 'no_such_task'" in job_row(ctx, unknown).last_error
    assert "not JSON-serialisable" in job_row(ctx, bad_result).last_error
