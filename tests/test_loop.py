"""A job loop driven directly: batching, and what happens when recording fails mid-batch."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from app.services.context import Context
from app.settings import Settings
from app.workers.loop import Counters, JobLoop, Slot
from app.workers.registry import TaskRegistry
from tests.fleet_support import job_row, submit


@pytest.fixture
def short_lease_ctx(settings: Settings, ctx: Context) -> Iterator[Context]:
    short = Context(settings.model_copy(update={"heartbeat_interval_seconds": 0.5,
                                                "heartbeat_ttl_seconds": 2}))  # fmt: skip
    yield short
    short.close()


def make_loop(ctx: Context, runs: list[str]) -> JobLoop:
    tasks = TaskRegistry()

    def record(payload: Any) -> str:
        runs.append(payload["name"])
        time.sleep(0.03)  # longer than FLUSH_AFTER: the next job's settle flushes this one
        return "ok"

    tasks.register("record", record)
    return JobLoop(ctx, "loop:1", ["default"], tasks, Slot(0), Counters(), threading.Event(), set())


def test_a_deep_list_is_claimed_in_one_batch(ctx: Context) -> None:
    ids = [submit(ctx, task="record", payload={"name": str(i)}) for i in range(5)]
    runs: list[str] = []
    loop = make_loop(ctx, runs)
    loop.prefetch = 8
    assert loop.step() == 5
    assert runs == ["0", "1", "2", "3", "4"]
    assert all(job_row(ctx, i).status == "completed" for i in ids)
    assert loop.slot.held == ()


def test_a_job_that_ran_is_never_handed_back_when_recording_fails(
    short_lease_ctx: Context,
) -> None:
    ctx = short_lease_ctx
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
    try:
        runs: list[str] = []
        loop = make_loop(ctx, runs)
        loop.prefetch = 3
        with pytest.raises(DBAPIError):
            loop.step()  # A and B ran; recording them failed past the lease; C never started
    finally:
        with ctx.db.transaction() as session:
            session.execute(text("DROP TRIGGER refuse_attempt ON job_attempts"))
            session.execute(text("DROP FUNCTION refuse_attempt()"))
    assert runs == ["A", "B"]
    # A and B ran: they stay claimed, for recovery to judge as lost attempts. C is handed
    # back untouched: queued again, its attempt not counted.
    assert job_row(ctx, first).status == "processing"
    assert job_row(ctx, second).status == "processing"
    assert (job_row(ctx, third).status, job_row(ctx, third).attempts) == ("queued", 0)
    assert ctx.redis.client.lrange(ctx.keys.ready("default", 0, "acme"), 0, -1) == [third.encode()]
