"""The periodic duties, called directly through run_once, and their one-at-a-time lock."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import text

from app.dispatch import fleet, reconcile
from app.services import execution
from app.services.context import Context
from app.services.maintenance import DutyRunner, Promoter, Reconciler, Recovery, Retention
from app.settings import Settings
from tests.fleet_support import attempts, job_row, submit
from tests.helpers import ROOT, settings_env, wait_until


def ready_ids(ctx: Context, queue: str = "default", priority: int = 0) -> list[str]:
    return [
        i.decode() for i in ctx.redis.client.lrange(ctx.keys.ready(queue, priority, "acme"), 0, -1)
    ]


def sql(ctx: Context, statement: str, **params: Any) -> None:
    with ctx.db.transaction() as session:
        session.execute(text(statement), params)


def test_promoter_moves_due_jobs_and_forgets_stale_ids(ctx: Context) -> None:
    due = submit(ctx, task="noop", delay_seconds=3600, priority=4)
    later = submit(ctx, task="noop", delay_seconds=3600)
    gone = submit(ctx, task="noop", delay_seconds=3600)
    sql(ctx, "UPDATE jobs SET run_at = now() - interval '1 s' WHERE id IN (:a, :b)", a=due, b=gone)
    sql(ctx, "UPDATE jobs SET status = 'cancelled' WHERE id = :id", id=gone)
    ctx.redis.client.zadd(ctx.keys.delayed, {due: 0, gone: 0})

    assert Promoter(ctx).run_once(time.time()) == 1
    assert job_row(ctx, due).status == "queued"
    assert ready_ids(ctx, priority=4) == [due]
    assert job_row(ctx, later).status == "scheduled"
    remaining = {m.decode() for m in ctx.redis.client.zrange(ctx.keys.delayed, 0, -1)}
    assert remaining == {later}


def test_recovery_takes_expired_leases_and_jobs_of_silent_workers(ctx: Context) -> None:
    expired = submit(ctx, task="noop")
    silent = submit(ctx, task="noop")
    alive = submit(ctx, task="noop")
    (lease_expired,) = execution.claim(ctx, [expired], "host:1:1")
    (lease_silent,) = execution.claim(ctx, [silent], "host:1:2")
    execution.claim(ctx, [alive], "host:1:3")
    sql(ctx, "UPDATE jobs SET lease_expires_at = now() - interval '1 s' WHERE id = :id", id=expired)
    # Not renewed for a while, and no heartbeat key for its worker; the third worker beats.
    sql(
        ctx,
        "UPDATE jobs SET lease_expires_at = now() + interval '1 s' WHERE id IN (:a, :b)",
        a=silent,
        b=alive,
    )
    fleet.write_heartbeat(ctx.redis.client, ctx.keys, "host:1:3", {"kind": "worker"}, 30)

    assert Recovery(ctx).run_once(time.time()) == 2
    for job_id in (expired, silent):
        row = job_row(ctx, job_id)
        assert row.status == "scheduled" and row.lease_token is None
        assert [a.outcome for a in attempts(ctx, job_id)] == ["lost"]
        assert row.last_error.startswith("worker lost")
    assert job_row(ctx, alive).status == "processing"
    # The presumed-dead worker comes back and tries to finish: fenced, nothing changes.
    assert execution.complete(ctx, lease_expired.lease, '"late"') is False
    assert execution.complete(ctx, lease_silent.lease, '"late"') is False
    assert job_row(ctx, expired).status == "scheduled"


def test_reconciler_rebuilds_redis_when_its_data_is_gone(ctx: Context) -> None:
    ids = [submit(ctx, task="noop", priority=p) for p in (2, 7, 2)]
    scheduled = submit(ctx, task="noop", delay_seconds=600)
    reconcile.write_epoch(ctx.redis.client, ctx.keys, "e1")
    for key in ctx.redis.client.scan_iter(match=f"{ctx.keys.prefix}:*"):
        ctx.redis.client.delete(key)  # what a FLUSHALL does to our keys
    assert Reconciler(ctx).run_once(time.time()) == 4
    assert ready_ids(ctx, priority=7) == [ids[1]]
    assert ready_ids(ctx, priority=2) == [ids[0], ids[2]]
    assert ctx.redis.client.zscore(ctx.keys.delayed, scheduled) is not None
    assert reconcile.epoch_present(ctx.redis.client, ctx.keys)
    assert Reconciler(ctx).run_once(time.time()) == 0


def test_sweep_pushes_only_ids_missing_from_redis(ctx: Context) -> None:
    reconcile.write_epoch(ctx.redis.client, ctx.keys, "e1")
    lost = submit(ctx, task="noop")
    present = submit(ctx, task="noop")
    ctx.redis.client.lrem(
        ctx.keys.ready("default", 0, "acme"), 0, lost
    )  # the API died before its push
    sql(ctx, "UPDATE jobs SET run_at = now() - interval '1 hour' WHERE id = :id", id=lost)
    sql(ctx, "UPDATE jobs SET run_at = now() - interval '10 minutes' WHERE id = :id", id=present)
    reconciler = Reconciler(ctx)
    assert reconciler.sweep() == 1
    assert ready_ids(ctx) == [lost, present]
    assert reconciler.sweep() == 0


def test_retention_deletes_old_finished_jobs_only(ctx: Context) -> None:
    old_done, old_failed, new_done, queued = (submit(ctx, task="noop") for _ in range(4))
    finish = "UPDATE jobs SET status = :status, finished_at = now() - :age WHERE id = :id"
    sql(ctx, finish, status="completed", age=timedelta(days=8), id=old_done)
    sql(ctx, finish, status="failed", age=timedelta(days=8), id=old_failed)
    sql(ctx, finish, status="completed", age=timedelta(0), id=new_done)
    assert Retention(ctx).run_once(time.time()) == 1
    with ctx.db.transaction() as session:
        left = {str(i) for i in session.scalars(text("SELECT id FROM jobs")).all()}
    assert left == {old_failed, new_done, queued}  # failed jobs stay 30 days, in the DLQ


def test_a_duty_runs_only_where_its_lock_is_held(ctx: Context) -> None:
    started = threading.Event()
    release = threading.Event()

    class Slow:
        name = "slow-test-duty"
        interval = 0.1

        def run_once(self, now: float) -> int:
            started.set()
            release.wait(10)
            return 1

    stop = threading.Event()
    first = DutyRunner(ctx, Slow(), "a", stop)
    second = DutyRunner(ctx, Slow(), "b", stop)
    results: list[int | None] = []
    thread = threading.Thread(target=lambda: results.append(first.run_round()))
    thread.start()
    started.wait(5)
    assert second.run_round() is None  # "a" holds the lock
    release.set()
    thread.join(10)
    assert results == [1]
    assert second.run_round() == 1


def test_two_maintenance_processes_never_run_a_duty_at_once(
    settings: Settings, ctx: Context, tmp_path: Path
) -> None:
    env = settings_env(
        settings,
        LOG_LEVEL="DEBUG",
        PROMOTE_INTERVAL_SECONDS="0.02",
        RECOVERY_INTERVAL_SECONDS="0.02",
        RECONCILE_INTERVAL_SECONDS="0.02",
        RETENTION_INTERVAL_SECONDS="0.02",
    )
    for i in range(300):
        submit(ctx, task="noop", delay_seconds=0.5 + i / 300)  # keep the promoter busy
    logs = [tmp_path / f"m{i}.log" for i in range(2)]
    processes = []
    for log in logs:
        with log.open("w") as sink:
            processes.append(
                subprocess.Popen(
                    [sys.executable, "-m", "app", "maintenance"], cwd=ROOT, env=env, stderr=sink
                )
            )

    def rounds() -> list[dict[str, Any]]:
        lines = []
        for log in logs:
            for line in log.read_text().splitlines():
                record = json.loads(line)
                if record.get("action") in ("duty_started", "duty_finished"):
                    lines.append(record)
        return lines

    try:
        wait_until(
            lambda: (
                len({r["worker_id"] for r in rounds() if r["action"] == "duty_started"}) == 2
                and len(rounds()) > 400
            ),
            timeout=60,
            interval=0.2,
        )
    finally:
        for process in processes:
            process.terminate()
            process.wait(30)
    assert all(p.returncode == 0 for p in processes)

    by_duty: dict[str, list[tuple[str, str, str]]] = {}
    open_rounds: dict[tuple[str, str], str] = {}
    for record in rounds():
        who = (record["duty"], record["worker_id"])
        if record["action"] == "duty_started":
            open_rounds[who] = record["time"]
        elif who in open_rounds:
            by_duty.setdefault(record["duty"], []).append(
                (open_rounds.pop(who), record["time"], record["worker_id"])
            )
    assert {"promoter", "recovery", "reconciler", "retention"} <= set(by_duty)
    for duty, spans in by_duty.items():
        spans.sort()
        for (_, end, who), (start, _, other) in itertools.pairwise(spans):
            assert end <= start or who == other, (duty, end, start)
