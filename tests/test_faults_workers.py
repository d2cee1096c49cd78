"""Faults of workers: worker processes SIGKILLed while busy, and HTTP workers that vanish
with their leases or ack after losing them. Every job still completes exactly once
(tests/fault_support.py)."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from app.services.context import Context
from tests.fault_support import (
    JOBS,
    RUN_TIMEOUT,
    completed,
    fast,
    parent_pid,
    prime,
    run_to_the_end,
    submit_many,
)
from tests.fleet_support import job_row, workers_of
from tests.helpers import HEAVY, LiveAPI, LiveFleet, wait_until

pytestmark = [pytest.mark.live, HEAVY, pytest.mark.usefixtures("untraced")]


# --- 1. worker children SIGKILLed ---------------------------------------------------------------


def test_sigkilled_busy_children_lose_no_job_and_run_none_twice(
    ctx: Context, start_fleet: Callable[..., LiveFleet]
) -> None:
    settings = fast(ctx.settings)
    prime(ctx)
    ids = submit_many(ctx, JOBS, seconds=0.05)
    fleet = start_fleet(3, 2, on=settings)
    killed: dict[str, int] = {}

    def busy_victim() -> dict[str, Any] | bool:
        for beat in workers_of(ctx, fleet.host):
            if beat["current_jobs"] and beat["worker_id"] not in killed:
                return beat
        return completed(ctx) == JOBS  # stop waiting: the run is over

    for _ in range(5):
        victim = wait_until(busy_victim, timeout=30)
        assert isinstance(victim, dict), "the run ended before every kill was made"
        done_before = completed(ctx)
        # Only ever a child of our own manager.
        assert parent_pid(victim["pid"]) == fleet.process.pid
        os.kill(victim["pid"], signal.SIGKILL)
        killed[victim["worker_id"]] = victim["pid"]
        # Space the kills: wait for the fleet to make progress (or finish).
        wait_until(lambda b=done_before: completed(ctx) >= min(JOBS, b + 60), timeout=30)

    records = run_to_the_end(ctx, fleet, set(ids))
    lost = {
        job_id: rec for job_id, rec in records.items() if set(rec.outcomes) & {"lost", "timeout"}
    }
    # The victims were busy: their jobs show up as lost attempts of exactly those processes,
    # and were run again to completion by another one.
    assert lost
    for rec in lost.values():
        assert rec.outcomes[-1] == "completed"
        losers = {w for w, o in zip(rec.workers, rec.outcomes, strict=True) if o == "lost"}
        assert losers <= set(killed)
        assert rec.workers[-1] not in losers
    # The manager replaced every killed child.
    wait_until(
        lambda: (
            len(beats := workers_of(ctx, fleet.host)) == 3
            and not {b["pid"] for b in beats} & set(killed.values())
        ),
        timeout=30,
    )


# --- 6. HTTP workers that vanish or ack late --------------------------------------------------


def test_http_workers_that_vanish_or_ack_late_change_nothing(
    ctx: Context,
    make_key: Callable[..., str],
    start_api: Callable[..., LiveAPI],
    start_fleet: Callable[..., LiveFleet],
) -> None:
    settings = fast(ctx.settings)
    api = start_api(settings)
    prime(ctx)
    ids = submit_many(ctx, JOBS, seconds=0.005)
    headers = {"Authorization": f"Bearer {make_key('acme', 'worker')}"}
    with httpx.Client(base_url=api.url, headers=headers, timeout=15) as http:

        def lease(worker_id: str) -> dict[str, Any]:
            response = http.post(
                "/queues/default/lease", json={"worker_id": worker_id, "lease_seconds": 1}
            )
            assert response.status_code == 200, response.text
            return dict(response.json())

        vanished = [lease("vanisher") for _ in range(20)]
        late = lease("latecomer")
        late_id = late["job"]["id"]
        assert late["job"]["status"] == "processing"

        fleet = start_fleet(2, 2, on=settings)
        # The late worker's lease expired, the job was recovered and run by the fleet ...
        wait_until(lambda: job_row(ctx, late_id).status == "completed", timeout=RUN_TIMEOUT)
        body = {"lease_token": late["lease_token"]}
        # ... so its ack, nack and heartbeat are refused: 409 lease-lost.
        for path, extra in [
            ("ack", {"result": {"from": "the late worker"}}),
            ("nack", {"error": "late"}),
            ("heartbeat", {"lease_seconds": 30}),
        ]:
            response = http.post(f"/jobs/{late_id}/{path}", json={**body, **extra})
            assert response.status_code == 409, (path, response.text)
            assert response.headers["content-type"].startswith("application/problem+json")
            assert response.json()["code"] == "lease-lost"

    records = run_to_the_end(ctx, fleet, set(ids))
    late_record = records[late_id]
    assert late_record.outcomes == ["lost", "completed"]
    assert late_record.workers[0] == "http:latecomer"
    assert late_record.workers[1].startswith(fleet.host)
    assert late_record.result == {"runs": 1}  # the fleet's result, not the late worker's
    for leased in vanished:
        rec = records[leased["job"]["id"]]
        assert rec.outcomes == ["lost", "completed"]
        assert rec.workers[0] == "http:vanisher"
        assert rec.workers[1].startswith(fleet.host)
        assert rec.runs == 1
