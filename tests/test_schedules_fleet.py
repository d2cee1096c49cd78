"""Schedules fired by real duty runners: three `python -m app maintenance` processes, each
running the schedules duty, against a schedule that fires every second (a sixth cron field,
seconds, which SCHEDULE_SECONDS_FIELD allows). Every fire time makes exactly one job, in order,
none missing, and keeps up with the clock; a runner SIGKILLed in the middle of a fire loses
nothing: its transaction rolls back and another runner makes that fire's job."""

from __future__ import annotations

import math
import os
import signal
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from app.domain.schedule_schemas import ScheduleCreate
from app.domain.schedules import fire_key, read_key
from app.services import schedules
from app.services.auth import Principal, Scope
from app.services.context import Context
from app.settings import Settings
from devtools.processes import start_app
from tests.helpers import HEAVY, settings_env, terminate, wait_until

# Its fires are timed to the second: it runs beside no other heavy test.
pytestmark = [pytest.mark.live, HEAVY]

PRODUCER = Principal(uuid.uuid4(), "acme", frozenset({Scope.PRODUCER}))
RUNNERS = 3


def every_second(ctx: Context) -> uuid.UUID:
    """A schedule that fires every second, made as the API makes one."""
    seconds = Context(ctx.settings.model_copy(update={"schedule_seconds_field": True}))
    try:
        request = ScheduleCreate(name="tick", cron="* * * * * *", task="noop")
        return schedules.create(seconds, PRODUCER, request).id
    finally:
        seconds.close()


def fires(ctx: Context, schedule_id: uuid.UUID) -> list[tuple[datetime, str, datetime]]:
    """(fire time, job id, created at) of every job of the schedule, by fire time."""
    with ctx.db.transaction() as session:
        rows = session.execute(
            text("SELECT id, idempotency_key, created_at FROM jobs WHERE idempotency_key LIKE :p"),
            {"p": f"schedule:{schedule_id}:%"},
        ).all()
    found = []
    for row in rows:
        fire_time, manual = read_key(row.idempotency_key)
        assert fire_time is not None and not manual, row.idempotency_key
        found.append((fire_time, str(row.id), row.created_at))
    return sorted(found)


def assert_consecutive(times: list[datetime]) -> None:
    """One job per second from the first fire time to the last: no duplicate, no gap."""
    assert len(times) == len(set(times)), "a fire time made two jobs"
    expected = [times[0] + timedelta(seconds=i) for i in range(len(times))]
    missing = sorted(set(expected) - set(times))
    assert times == expected, f"fire times missing: {missing[:10]}"


@pytest.fixture
def runners(settings: Settings, ctx: Context, tmp_path: Path) -> Iterator[list[Any]]:
    """Three duty runners on this host, each a `python -m app maintenance` process."""
    env = settings_env(settings, SCHEDULE_INTERVAL_SECONDS="0.2", LOG_LEVEL="WARNING")
    processes = []
    for n in range(RUNNERS):
        with (tmp_path / f"runner{n}.log").open("w") as log:
            processes.append(start_app(["maintenance"], env, stderr=log))
    yield processes
    for process in processes:
        if process.poll() is None:
            assert terminate(process, 30) == 0


def test_three_runners_fire_every_second_once_in_order_keeping_up_with_the_clock(
    ctx: Context, runners: list[Any]
) -> None:
    schedule_id = every_second(ctx)
    wait_until(lambda: fires(ctx, schedule_id), timeout=60, what="the first fire")
    seconds = 8
    start = len(fires(ctx, schedule_id))
    began = time.monotonic()
    wait_until(
        lambda: len(fires(ctx, schedule_id)) >= start + seconds,
        timeout=seconds + 20,
        what=f"{seconds} more fires",
    )
    # N fires in about N seconds: the runners keep up (a few seconds of slack for the moments
    # of the looks and a busy machine).
    assert time.monotonic() - began <= seconds + 3
    made = fires(ctx, schedule_id)
    times = [fire_time for fire_time, _, _ in made]
    assert_consecutive(times)
    now = datetime.now(UTC)
    due = math.floor((now - times[0]).total_seconds()) + 1  # fire times up to now
    assert due - 2 <= len(times) <= due, (due, len(times))
    # Each job was made within moments of its fire time, and is in Redis for the workers.
    late = [(created - fire_time).total_seconds() for fire_time, _, created in made[start:]]
    assert max(late) < 3.0, late
    ready = {
        i.decode() for i in ctx.redis.client.lrange(ctx.keys.ready("default", 0, "acme"), 0, -1)
    }
    assert {job_id for _, job_id, _ in made} <= ready
    assert all(process.poll() is None for process in runners)


def test_a_runner_killed_in_the_middle_of_a_fire_loses_nothing(
    ctx: Context, runners: list[Any]
) -> None:
    schedule_id = every_second(ctx)
    wait_until(lambda: len(fires(ctx, schedule_id)) >= 2, timeout=60, what="fires")
    # Hold a fire time a few seconds ahead: an uncommitted job of its key makes the runner
    # that fires it wait inside its transaction (INSERT ... ON CONFLICT waits for the holder).
    held = fires(ctx, schedule_id)[-1][0] + timedelta(seconds=3)
    blocker = ctx.db.engine.connect()
    transaction = blocker.begin()
    blocker.execute(
        text(
            "INSERT INTO jobs (tenant, queue, task, status, idempotency_key, max_retries, "
            "timeout_seconds) VALUES ('acme', 'default', 'noop', 'queued', :key, 0, 60)"
        ),
        {"key": fire_key(schedule_id, held)},
    )
    try:

        def waiting_runner() -> bool:
            with ctx.db.transaction() as session:
                return bool(
                    session.scalar(
                        text(
                            "SELECT count(*) FROM pg_stat_activity WHERE datname = "
                            "current_database() AND application_name = 'jobfleet-maintenance' "
                            "AND wait_event_type = 'Lock' AND wait_event = 'transactionid'"
                        )
                    )
                )

        wait_until(waiting_runner, timeout=30, interval=0.02, what="a runner waiting mid-fire")
        holder = ctx.redis.client.get(ctx.keys.lock("schedules"))
        assert holder is not None
        pid = int(holder.decode().rsplit(":", 1)[1])
        assert pid in {process.pid for process in runners}
        os.kill(pid, signal.SIGKILL)
    finally:
        transaction.rollback()
        blocker.close()
    killed = next(process for process in runners if process.pid == pid)
    assert killed.wait(10) == -signal.SIGKILL
    # The others go on once its lock expires, and make the fire it was making.
    wait_until(
        lambda: fires(ctx, schedule_id)[-1][0] >= held + timedelta(seconds=3),
        timeout=60,
        what="fires after the kill",
    )
    times = [fire_time for fire_time, _, _ in fires(ctx, schedule_id)]
    assert held in times
    assert_consecutive(times)
    assert sum(process.poll() is None for process in runners) == RUNNERS - 1
