"""A job loop driven directly, on a clock the test moves: batching, grouped recording of
successes, and what happens when recording fails mid-batch."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from app.services import execution
from app.services.context import Context
from app.workers.loop import FINISH_RETRY, FLUSH_AFTER, Counters, JobLoop, Slot
from app.workers.registry import TaskRegistry
from tests.fleet_support import job_row, statuses, submit


class FakeClock:
    """Time that moves only when told to; a sleep moves it at once."""

    def __init__(self) -> None:
        self.time = 1000.0
        self.slept: list[float] = []

    def now(self) -> float:
        return self.time

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.time += seconds


def make_loop(ctx: Context, clock: FakeClock, runs: list[Any], run_time: float) -> JobLoop:
    """A loop whose `record` task notes its name and how many jobs Postgres holds as completed
    when it starts, and takes `run_time` seconds of the loop's clock."""
    tasks = TaskRegistry()

    def record(payload: Any) -> str:
        runs.append((payload["name"], statuses(ctx).get("completed", 0)))
        clock.time += run_time
        return "ok"

    tasks.register("record", record)
    return JobLoop(
        ctx,
        "loop:1",
        ["default"],
        tasks,
        Slot(0),
        Counters(),
        threading.Event(),
        set(),
        clock=clock,
    )


def test_a_deep_list_is_claimed_in_one_batch_and_recorded_in_one_go(ctx: Context) -> None:
    ids = [submit(ctx, task="record", payload={"name": str(i)}) for i in range(5)]
    runs: list[Any] = []
    loop = make_loop(ctx, FakeClock(), runs, run_time=0.0)
    loop.prefetch = 8
    assert loop.step() == 5
    # No time passed: every success waited for the end of the turn.
    assert runs == [("0", 0), ("1", 0), ("2", 0), ("3", 0), ("4", 0)]
    assert all(job_row(ctx, i).status == "completed" for i in ids)
    assert loop.slot.held == ()
    assert loop.counters.processed == 5


def test_successes_wait_at_most_flush_after_to_be_recorded(ctx: Context) -> None:
    for i in range(5):
        submit(ctx, task="record", payload={"name": str(i)})
    runs: list[Any] = []
    loop = make_loop(ctx, FakeClock(), runs, run_time=FLUSH_AFTER * 0.6)
    loop.prefetch = 8
    assert loop.step() == 5
    # Successes wait until one comes FLUSH_AFTER or more after the first of their group: with
    # jobs of 0.6 x FLUSH_AFTER, the third. The last group is recorded as the turn ends.
    assert runs == [("0", 0), ("1", 0), ("2", 0), ("3", 3), ("4", 3)]
    assert statuses(ctx) == {"completed": 5}


def test_the_average_run_time_bounds_the_prefetch(ctx: Context) -> None:
    for i in range(4):
        submit(ctx, task="record", payload={"name": str(i)})
    loop = make_loop(ctx, FakeClock(), [], run_time=0.01)
    loop.prefetch = 4
    assert loop.step() == 4
    assert loop.average_run == pytest.approx(0.01 * (1 - 0.8**4))
    assert loop.prefetch_limit() == int(0.05 / loop.average_run)


def test_a_job_that_ran_is_never_handed_back_when_recording_fails(ctx: Context) -> None:
    first, second, third = (submit(ctx, task="record", payload={"name": n}) for n in "ABC")
    with ctx.db.transaction() as session:
        session.execute(
            text(
                "CREATE FUNCTION refuse_attempt() RETURNS trigger LANGUAGE plpgsql AS $$ "
                f"BEGIN IF NEW.job_id = '{first}' THEN RAISE EXCEPTION 'refused'; END IF; "
                "RETURN NEW; END $$"
            )
        )
        session.execute(
            text(
                "CREATE TRIGGER refuse_attempt BEFORE INSERT ON job_attempts "
                "FOR EACH ROW EXECUTE FUNCTION refuse_attempt()"
            )
        )
    clock = FakeClock()
    try:
        runs: list[Any] = []
        # B ends 1.5 x FLUSH_AFTER after A: its settle records A and B together, which fails.
        loop = make_loop(ctx, clock, runs, run_time=FLUSH_AFTER * 1.5)
        loop.prefetch = 3
        with pytest.raises(DBAPIError):
            loop.step()  # A and B ran; recording them failed past the lease; C never started
    finally:
        with ctx.db.transaction() as session:
            session.execute(text("DROP TRIGGER refuse_attempt ON job_attempts"))
            session.execute(text("DROP FUNCTION refuse_attempt()"))
    assert [name for name, _ in runs] == ["A", "B"]
    # It retried for as long as the leases could be current, then gave up.
    assert sum(clock.slept) >= execution.lease_seconds(ctx)
    assert set(clock.slept) == {FINISH_RETRY}
    # A and B ran: they stay claimed, for recovery to judge as lost attempts. C is handed
    # back untouched: queued again, its attempt not counted.
    assert job_row(ctx, first).status == "processing"
    assert job_row(ctx, second).status == "processing"
    assert (job_row(ctx, third).status, job_row(ctx, third).attempts) == ("queued", 0)
    assert ctx.redis.client.lrange(ctx.keys.ready("default", 0, "acme"), 0, -1) == [third.encode()]
