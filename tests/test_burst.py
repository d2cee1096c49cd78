"""Burst runs: `python -m app worker --burst` works until its queues have no work left (as
docs/OPERATIONS.md defines it), then exits 0 by itself."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

from sqlalchemy import text

from app.services import drain, execution, fleet
from app.services.context import Context
from app.settings import Settings
from tests.fleet_support import (
    ADMIN,
    FAST_RETRIES,
    attempts,
    burst,
    job_row,
    runs_per_job,
    statuses,
    submit,
    workers_of,
)
from tests.helpers import ROOT, LiveFleet, settings_env, wait_until


def sql(ctx: Context, statement: str, **params: str) -> None:
    with ctx.db.transaction() as session:
        session.execute(text(statement), params)


def test_work_left_is_what_is_queued_running_due_or_retrying(ctx: Context) -> None:
    kinds = ["queued", "running", "due", "retrying", "later", "done", "paused"]
    jobs = {kind: submit(ctx, task="noop", queue=kind) for kind in kinds}
    execution.claim(ctx, [jobs["running"]], "host:1:1")
    for kind in ("due", "retrying", "later"):
        sql(ctx, "UPDATE jobs SET status = 'scheduled' WHERE id = :id", id=jobs[kind])
    sql(ctx, "UPDATE jobs SET run_at = now() - interval '1 s' WHERE id = :id", id=jobs["due"])
    # A retry in its backoff: scheduled after an attempt, due in an hour.
    sql(
        ctx,
        "UPDATE jobs SET attempts = 1, run_at = now() + interval '1 hour' WHERE id = :id",
        id=jobs["retrying"],
    )
    sql(ctx, "UPDATE jobs SET run_at = now() + interval '1 hour' WHERE id = :id", id=jobs["later"])
    sql(ctx, "UPDATE jobs SET status = 'completed' WHERE id = :id", id=jobs["done"])
    fleet.pause(ctx, ADMIN, "paused")

    backlog = drain.backlog(ctx, [*kinds, "unknown"])
    assert sorted(backlog.busy) == ["due", "queued", "retrying", "running"]
    assert backlog.paused == ["paused"] and not backlog.drained
    assert drain.backlog(ctx, ["later", "done", "paused"]).drained


def test_a_burst_run_completes_every_ready_job_then_exits_zero(
    settings: Settings, ctx: Context
) -> None:
    ids = [submit(ctx, priority=i % 3) for i in range(60)]
    assert burst(settings, processes=2, threads=2) == 0
    assert statuses(ctx) == {"completed": 60}
    assert runs_per_job(ctx) == dict.fromkeys(ids, 1)
    assert workers_of(ctx, "") == [] and ctx.redis.client.keys(ctx.keys.worker_pattern) == []


def test_with_nothing_to_do_it_exits_zero_before_starting_a_worker(
    settings: Settings, ctx: Context
) -> None:
    later = submit(ctx, task="noop", delay_seconds=3600)  # a producer's job for later: not yet
    # A worker process would fail to load this module (and the run would exit 1): none starts.
    assert burst(settings, TASK_MODULES="tests.no_such_module") == 0
    assert job_row(ctx, later).status == "scheduled"


def test_a_worker_that_cannot_start_fails_the_run(settings: Settings, ctx: Context) -> None:
    job_id = submit(ctx, task="noop")
    assert burst(settings, TASK_MODULES="tests.no_such_module") == 1
    assert (job_row(ctx, job_id).status, job_row(ctx, job_id).attempts) == ("queued", 0)


def test_retries_are_run_to_their_end_and_a_failing_job_ends_in_the_dlq(
    settings: Settings, ctx: Context
) -> None:
    doomed = submit(ctx, task="fail", max_retries=3)
    flaky = submit(ctx, task="flaky", payload={"failures": 2}, max_retries=3)
    due = submit(ctx, task="noop", delay_seconds=3600)
    later = submit(ctx, task="noop", delay_seconds=3600)
    with ctx.db.transaction() as session:
        session.execute(text("UPDATE jobs SET run_at = now() WHERE id = :id"), {"id": due})

    assert burst(settings, **FAST_RETRIES) == 0  # a job that failed is no error of the run
    assert [a.outcome for a in attempts(ctx, doomed)] == ["failed"] * 4
    assert job_row(ctx, doomed).status == "failed"
    assert [a.outcome for a in attempts(ctx, flaky)] == ["failed", "failed", "completed"]
    assert job_row(ctx, due).status == "completed"
    assert job_row(ctx, later).status == "scheduled"


def test_paused_queues_are_left_alone(settings: Settings, ctx: Context) -> None:
    held = [submit(ctx, task="noop", queue="held") for _ in range(3)]
    passing = submit(ctx, task="noop", queue="default")
    fleet.pause(ctx, ADMIN, "held")
    assert burst(settings, queues="held") == 0  # every queue it serves is paused
    assert burst(settings, queues="held,default") == 0
    assert job_row(ctx, passing).status == "completed"
    assert [job_row(ctx, j).status for j in held] == ["queued"] * 3


def test_a_killed_worker_is_no_error_and_its_job_is_recovered_before_the_run_ends(
    settings: Settings, ctx: Context
) -> None:
    victim = submit(ctx, payload={"first_run_seconds": 60})
    others = [submit(ctx) for _ in range(10)]
    run = LiveFleet(settings, processes=2, threads=1, burst=True, **FAST_RETRIES)
    try:
        busy = wait_until(
            lambda: [w for w in workers_of(ctx, run.host) if victim in w["current_jobs"]],
            timeout=30,
        )[0]
        os.kill(busy["pid"], signal.SIGKILL)
        assert run.process.wait(timeout=60) == 0
    finally:
        run.stop()
    assert [a.outcome for a in attempts(ctx, victim)] == ["lost", "completed"]
    assert runs_per_job(ctx) == {victim: 2, **dict.fromkeys(others, 1)}


def test_a_burst_run_needs_a_worker_process(settings: Settings) -> None:
    command = [sys.executable, "-m", "app", "worker", "--burst", "--processes", "0"]
    done = subprocess.run(
        command, cwd=ROOT, env=settings_env(settings), capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2
    assert "needs at least one worker process" in done.stderr
