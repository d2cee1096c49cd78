"""The workloads of the benchmark, each a function of the stack and the sizes that returns
its figures: single submits over HTTP, batch submits, draining a deep queue, pickup latency at
a steady rate, commit-to-start latency of transactional enqueues, the hardware's own ceiling
(Postgres INSERT+COMMIT, Redis RPUSH+BLPOP), the dashboard's queries over a million jobs, and
the duties over a million jobs churned with autovacuum off."""

from __future__ import annotations

import dataclasses
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from uuid_utils.compat import uuid7

from app.runtime import freeze_startup_objects
from bench import defaults, readout, vacuum
from bench.ceiling import insert_commit_rate, push_pop_rate
from bench.dashboard import measure as measure_dashboard
from bench.load import Load, closed_loop, paced, process_tree_cpu_seconds
from bench.stack import Stack
from bench.transactional import commit_rates
from bench.transactional import measure as measure_transactional
from devtools.waiting import wait_until


@dataclass(frozen=True)
class Sizes:
    http_jobs: int = 20_000
    http_clients: int = 32
    batch_jobs: int = 100_000
    batch_size: int = 1_000
    drain_jobs: int = 20_000
    pickup_jobs: int = 2_000
    pickup_rate: float = 200.0
    history_jobs: int = 100_000
    ceiling_seconds: float = 3.0
    load_processes: int = 2  # of the HTTP load generator
    batch_clients: int = 8
    dashboard_jobs: int = 1_000_000
    txn_jobs: int = 1_000  # transactional enqueues, one per transaction
    txn_rate: float = 100.0
    churned_jobs: int = 1_000_000
    defaults_rate: float = 1_000.0  # submits per second k6 offers the default-settings stack
    defaults_seconds: int = 20


# Small enough that the whole set runs in about a minute (tests/test_bench.py): these prove
# that every workload runs and reports, and measure nothing worth reading.
QUICK = Sizes(
    http_jobs=600,
    http_clients=8,
    batch_jobs=2_000,
    batch_size=1_000,
    drain_jobs=2_000,
    pickup_jobs=100,
    pickup_rate=100.0,
    history_jobs=5_000,
    ceiling_seconds=0.5,
    load_processes=2,
    batch_clients=2,
    dashboard_jobs=5_000,
    txn_jobs=50,
    txn_rate=100.0,
    churned_jobs=5_000,
    defaults_rate=100.0,
    defaults_seconds=2,
)


def _history_ids(count: int) -> list[uuid.UUID]:
    """Ids as the API gave them a day ago, one millisecond apart: time-ordered, like all ids."""
    day_ago_ns = time.time_ns() - 86_400 * 10**9
    return [uuid7(nanoseconds=day_ago_ns + n * 10**6) for n in range(count)]


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return 0.0
    index = min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))
    return ordered[index]


# -- workloads ------------------------------------------------------------------------------


def submit_http(stack: Stack, sizes: Sizes) -> dict[str, float]:
    url = stack.start_api()
    load = Load(
        url=url,
        headers={"Authorization": f"Bearer {stack.key}"},
        path="/jobs",
        body={"task": "noop", "queue": "http"},
        expect=201,
        requests=sizes.http_jobs,
        clients=sizes.http_clients,
    )
    api_cpu = process_tree_cpu_seconds(stack.processes[-1].pid)
    measured = closed_loop(load, sizes.load_processes)
    api_cpu = process_tree_cpu_seconds(stack.processes[-1].pid) - api_cpu
    stack.stop(stack.processes[-1])
    assert stack.count("http", "queued") == sizes.http_jobs
    return {
        "jobs_per_second": sizes.http_jobs / measured.seconds,
        "p50_ms": _percentile(measured.latencies, 50) * 1000,
        "p99_ms": _percentile(measured.latencies, 99) * 1000,
        # Where the two cores went: what each request cost the API and the load generator.
        "api_cpu_ms_per_request": api_cpu / sizes.http_jobs * 1000,
        "loadgen_cpu_ms_per_request": measured.cpu_seconds / sizes.http_jobs * 1000,
    }


def submit_batch(stack: Stack, sizes: Sizes) -> dict[str, float]:
    url = stack.start_api()
    requests = sizes.batch_jobs // sizes.batch_size
    load = Load(
        url=url,
        headers={"Authorization": f"Bearer {stack.key}"},
        path="/jobs/batch",
        body={"jobs": [{"task": "noop", "queue": "batch"}] * sizes.batch_size},
        expect=200,
        requests=requests,
        clients=sizes.batch_clients,
    )
    measured = closed_loop(load, sizes.load_processes)
    stack.stop(stack.processes[-1])
    assert stack.count("batch", "queued") == requests * sizes.batch_size
    return {"jobs_per_second": requests * sizes.batch_size / measured.seconds}


def drain(
    stack: Stack, sizes: Sizes, processes: int, threads: int, history: int = 0, queue: str = ""
) -> dict[str, float]:
    if history:
        with stack.ctx.db.transaction() as session:
            readout.seed_history(session, _history_ids(history))
        readout.vacuum(stack.settings.database_url)
        # Old history is on disk long since: its pages are not written back mid-measurement.
        readout.checkpoint(stack.settings.database_url)
    queue = queue or f"drain{processes}x{threads}"
    stack.enqueue(queue, sizes.drain_jobs)
    fleet = stack.start_fleet(processes, threads, queue)
    launched = stack.fleet_launched
    wait_until(lambda: not stack.unfinished(queue), 600, what="the drain")
    stack.stop(fleet)
    with stack.ctx.db.transaction() as session:
        window = readout.drain_window(session, queue)
    if not (
        window.completed == window.attempts == window.jobs_with_one_attempt == sizes.drain_jobs
    ):
        raise RuntimeError(f"drain verification failed: {window}")
    # Including the fleet's start: from `python -m app worker`'s launch (the benchmark's clock,
    # the machine's, as Postgres' is) to the last finish, as the peers' `w2_total` is measured.
    total = window.last_finish - launched
    return {
        "jobs_per_second": sizes.drain_jobs / window.seconds,
        "seconds": window.seconds,
        "jobs_per_second_total": sizes.drain_jobs / total,
        "startup_seconds": window.first_claim - launched,  # launch to first claim
        # The peers' start-up figure ends at their first completion.
        "first_finish_seconds": window.first_finish - launched,
    }


def pickup(stack: Stack, sizes: Sizes) -> dict[str, float]:
    url = stack.start_api()
    api = stack.processes[-1]
    fleet = stack.start_fleet(2, 2, "pickup")
    load = Load(
        url=url,
        headers={"Authorization": f"Bearer {stack.key}"},
        path="/jobs",
        body={"task": "bench.started", "queue": "pickup"},
        expect=201,
        requests=sizes.pickup_jobs,
        clients=64,
        stamp=True,
    )
    # Warm up before the clock starts, as the peers' workers run 20 jobs first: the fleet is
    # up, and each API process has its pools, caches and compiled statements. Unstamped jobs,
    # left out of the figures.
    noop = {"task": "noop", "queue": "pickup"}
    warm_up = dataclasses.replace(load, body=noop, requests=2 * load.clients, stamp=False)
    paced(warm_up, sizes.pickup_rate)
    wait_until(lambda: not stack.unfinished("pickup"), 60, what="the warm-up jobs")

    freeze_startup_objects()  # no full collection of the whole bench may stall the pacing
    cpu = [process_tree_cpu_seconds(process.pid) for process in (api, fleet)]
    sent = paced(load, sizes.pickup_rate)
    wait_until(lambda: not stack.unfinished("pickup"), 120, what="the pickups")
    cpu = [process_tree_cpu_seconds(p.pid) - c for p, c in zip((api, fleet), cpu, strict=True)]
    stack.stop(fleet)
    stack.stop(api)
    with stack.ctx.db.transaction() as session:
        # As the peers measure it: the client's clock before the send to the task's start.
        waits = readout.pickup_sent_to_started(session, "pickup")
        # Inside the stack alone: the API's insert transaction to the claim (Postgres' clock).
        inside = readout.pickup_milliseconds(session, "pickup")
    if len(waits) != sizes.pickup_jobs:
        raise RuntimeError(f"pickup: {len(waits)} of {sizes.pickup_jobs} jobs stamped")
    figures = {f"p{q}_ms": _percentile(waits, q) for q in (50, 95, 99)}
    figures.update({f"created_to_claimed_p{q}_ms": _percentile(inside, q) for q in (50, 99)})
    # As the peers' producers report it: how far behind its schedule the load fell.
    figures["producer_max_lag_ms"] = sent.behind_seconds * 1000
    # Where the two cores went, per job: the API (all its processes), the fleet, the load.
    jobs_sent = sizes.pickup_jobs
    figures["api_cpu_ms_per_job"] = cpu[0] / jobs_sent * 1000
    figures["fleet_cpu_ms_per_job"] = cpu[1] / jobs_sent * 1000
    figures["loadgen_cpu_ms_per_job"] = sent.cpu_seconds / jobs_sent * 1000
    return figures


def transactional(stack: Stack, sizes: Sizes, through_sql: bool) -> dict[str, float]:
    return measure_transactional(stack, sizes.txn_jobs, sizes.txn_rate, through_sql)


def dashboard(stack: Stack, sizes: Sizes) -> dict[str, float]:
    return measure_dashboard(stack.ctx, sizes.dashboard_jobs)


def autovacuum_off(stack: Stack, sizes: Sizes) -> dict[str, float]:
    return vacuum.measure(
        stack, sizes.churned_jobs, lambda lag, queue: drain(lag, sizes, 2, 2, queue=queue)
    )


def default_settings(stack: Stack, sizes: Sizes) -> dict[str, float]:
    return defaults.measure(stack, defaults.Shape(sizes.defaults_rate, sizes.defaults_seconds))


def ceiling(stack: Stack, sizes: Sizes) -> dict[str, float]:
    return {
        "postgres_insert_commit_per_second": insert_commit_rate(
            stack.settings.database_url, sizes.ceiling_seconds
        ),
        "redis_push_pop_pairs_per_second": push_pop_rate(
            stack.settings.redis_url, f"{stack.settings.key_prefix}:ceiling", sizes.ceiling_seconds
        ),
    }


Workload = Callable[[Stack, Sizes], dict[str, float]]
WORKLOADS: dict[str, Workload] = {
    "ceiling": ceiling,
    "submit-http": submit_http,
    "submit-batch": submit_batch,
    "drain-2x2": lambda stack, sizes: drain(stack, sizes, 2, 2),
    "drain-4x1": lambda stack, sizes: drain(stack, sizes, 4, 1),
    "drain-2x2-history": lambda stack, sizes: drain(stack, sizes, 2, 2, sizes.history_jobs),
    "pickup": pickup,
    "enqueue-txn": lambda stack, sizes: transactional(stack, sizes, through_sql=False),
    "enqueue-sql": lambda stack, sizes: transactional(stack, sizes, through_sql=True),
    "enqueue-rate": lambda stack, sizes: commit_rates(stack, sizes.ceiling_seconds),
    "defaults": default_settings,
    "dashboard": dashboard,
    "autovacuum-off": autovacuum_off,
}
# Run only when named in --only: a million jobs to seed or churn is minutes of its own.
ON_REQUEST = ("dashboard", "autovacuum-off")
