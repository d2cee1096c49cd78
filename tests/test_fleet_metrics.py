"""The fleet's metrics port adds up the counters of all its worker processes."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from app.domain.schemas import JobCreate
from app.services import jobs
from app.services.context import Context
from tests.fleet_support import PRODUCER, workers_of
from tests.helpers import free_port, wait_until


def fleet_samples(port: int) -> dict[str, float]:
    """Every sample of the fleet's /metrics, summed over its labels, by sample name."""
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    totals: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            totals[sample.name] = totals.get(sample.name, 0.0) + sample.value
    return totals


@pytest.mark.live
def test_fleet_metrics_add_up_over_its_worker_processes(ctx: Context, start_fleet: Any) -> None:
    port = free_port()
    fleet = start_fleet(
        processes=3, threads=1, FLEET_METRICS_PORT=str(port), FLEET_METRICS_HOST="127.0.0.1"
    )
    jobs.submit_many(ctx, PRODUCER, [JobCreate(task="noop") for _ in range(300)])

    def counted() -> dict[str, float]:
        try:
            samples = fleet_samples(port)
        except httpx.ConnectError:
            return {}  # the port opens just after the first children start
        return samples if samples.get("jobfleet_jobs_completed_total") == 300 else {}

    samples = wait_until(counted, timeout=60, interval=0.1)
    assert samples["jobfleet_job_duration_seconds_count"] == 300
    assert samples["jobfleet_job_wait_seconds_count"] == 300
    assert samples.get("jobfleet_jobs_failed_total", 0) == 0

    # The 300 were run by more than one process: the merged counter is a real sum.
    def processed() -> list[int]:
        counts = [int(w["processed"]) for w in workers_of(ctx, fleet.host)]
        return counts if sum(counts) == 300 else []

    per_process = wait_until(processed, timeout=10, interval=0.1)
    assert len([n for n in per_process if n]) > 1, f"one process ran every job: {per_process}"
