"""python -m app bench: the throughput and latency figures of docs/BENCHMARKS.md.

It runs a private stack on this machine (its own database and Redis key prefix, an API and
fleets it starts and stops) and measures, each workload three times: single submits over
HTTP, batch submits, draining a deep queue, pickup latency at a steady rate, and the
hardware's own ceiling (Postgres INSERT+COMMIT, Redis RPUSH+BLPOP). Speed is reported here,
never asserted in a test.
"""

from __future__ import annotations

import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import httpx
import redis
from sqlalchemy.engine import make_url
from uuid_utils.compat import uuid7

from app.benchload import Load, closed_loop, paced, process_tree_cpu_seconds
from app.dispatch.ceiling import push_pop_rate
from app.domain.schemas import JobCreate
from app.domain.states import DELETABLE
from app.runtime import freeze_startup_objects
from app.services import auth, jobs
from app.services.context import Context
from app.settings import Settings
from app.store import bench as readout
from app.store import jobs as job_store
from app.store.admin import drop_database, migrate
from app.store.ceiling import insert_commit_rate

ROOT = Path(__file__).resolve().parent.parent


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


QUICK = Sizes(2_000, 16, 5_000, 1_000, 2_000, 200, 100.0, 5_000, 0.5, 2, 4)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"bench: {what} did not happen within {timeout} s")
        time.sleep(0.02)


class Stack:
    """A database and key prefix of the benchmark's own, and the processes it starts."""

    def __init__(self, settings: Settings, api_workers: int) -> None:
        # A database and key prefix of its own, named after the configured ones.
        url = make_url(settings.database_url)
        url = url.set(database=f"{url.database}_bench")
        self.settings = settings.model_copy(
            update={
                "database_url": url.render_as_string(hide_password=False),
                "key_prefix": f"{settings.key_prefix}bench",
                "rate_limit_enabled": False,
                "log_level": "WARNING",
                "fleet_metrics_port": 0,
                "api_metrics_port": 0,
            }
        )
        self.api_workers = api_workers
        self.processes: list[subprocess.Popen[bytes]] = []
        self.ctx = Context(self.settings)

    def env(self, **overrides: str) -> dict[str, str]:
        env = dict(os.environ)
        for name, value in self.settings.model_dump().items():
            if hasattr(value, "get_secret_value"):
                value = value.get_secret_value()
            env[name.upper()] = str(getattr(value, "value", value))
        env.update(overrides)
        return env

    def reset(self) -> None:
        self.ctx.close()
        drop_database(self.settings.database_url)
        migrate(self.settings.database_url)
        client = redis.Redis.from_url(self.settings.redis_url)
        keys = list(client.scan_iter(match=f"{self.settings.key_prefix}:*", count=1000))
        if keys:
            client.delete(*keys)
        client.close()
        readout.checkpoint(self.settings.database_url)
        self.ctx = Context(self.settings)
        _, self.key = auth.create_key(self.ctx, "bench", [auth.Scope.PRODUCER])
        self.principal = auth.authenticate(self.ctx, f"Bearer {self.key}")

    def start_api(self) -> str:
        port = _free_port()
        env = self.env(API_PORT=str(port), API_WORKERS=str(self.api_workers))
        self._start([sys.executable, "-m", "app", "api"], env)
        url = f"http://127.0.0.1:{port}"

        def up() -> bool:
            try:
                return httpx.get(f"{url}/health", timeout=1).status_code == 200
            except httpx.TransportError:
                return False

        _wait(up, 60, "the API start")
        return url

    def start_fleet(self, processes: int, threads: int, queue: str) -> subprocess.Popen[bytes]:
        command = [sys.executable, "-m", "app", "worker", "--processes", str(processes),
                   "--threads", str(threads), "--queues", queue]  # fmt: skip
        return self._start(command, self.env(FLEET_HOST=f"bench-{uuid.uuid4().hex[:6]}"))

    def _start(self, command: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        process = subprocess.Popen(command, cwd=ROOT, env=env)
        self.processes.append(process)
        return process

    def stop(self, process: subprocess.Popen[bytes]) -> None:
        process.terminate()
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        self.processes.remove(process)

    def close(self) -> None:
        for process in list(self.processes):
            self.stop(process)
        self.ctx.close()
        drop_database(self.settings.database_url)

    def count(self, queue: str, status: str) -> int:
        with self.ctx.db.transaction() as session:
            return readout.count_status(session, queue, status)

    def unfinished(self, queue: str) -> bool:
        with self.ctx.db.transaction() as session:
            return readout.has_unfinished(session, queue)

    def enqueue(self, queue: str, total: int) -> None:
        """Queue `total` noop jobs through the service, 1,000 per transaction."""
        for start in range(0, total, 1000):
            batch = [JobCreate(task="noop", queue=queue) for _ in range(min(1000, total - start))]
            jobs.submit_many(self.ctx, self.principal, batch)


def _figure(value: float) -> str:
    return f"{value:,.2f}" if abs(value) < 10 else f"{value:,.1f}"


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
    stack: Stack, sizes: Sizes, processes: int, threads: int, history: int = 0
) -> dict[str, float]:
    if history:
        with stack.ctx.db.transaction() as session:
            readout.seed_history(session, _history_ids(history))
        readout.vacuum(stack.settings.database_url)
        # Old history is on disk long since: its pages are not written back mid-measurement.
        readout.checkpoint(stack.settings.database_url)
    queue = f"drain{processes}x{threads}"
    stack.enqueue(queue, sizes.drain_jobs)
    fleet = stack.start_fleet(processes, threads, queue)
    _wait(lambda: not stack.unfinished(queue), 600, "the drain")
    stack.stop(fleet)
    with stack.ctx.db.transaction() as session:
        window = readout.drain_window(session, queue)
    if not (
        window.completed == window.attempts == window.jobs_with_one_attempt == sizes.drain_jobs
    ):
        raise RuntimeError(f"drain verification failed: {window}")
    return {"jobs_per_second": sizes.drain_jobs / window.seconds, "seconds": window.seconds}


def pickup(stack: Stack, sizes: Sizes) -> dict[str, float]:
    url = stack.start_api()
    fleet = stack.start_fleet(2, 2, "pickup")
    headers = {"Authorization": f"Bearer {stack.key}"}
    # Let the fleet come up before the clock starts: the first job must not wait for a spawn.
    probe = httpx.post(f"{url}/jobs", json={"task": "noop", "queue": "pickup"}, headers=headers)
    _wait(lambda: stack.count("pickup", "completed") == 1, 60, "the fleet start")
    with stack.ctx.db.transaction() as session:
        job_store.delete_job(session, uuid.UUID(probe.json()["id"]), None, DELETABLE)

    load = Load(
        url=url,
        headers=headers,
        path="/jobs",
        body={"task": "noop", "queue": "pickup"},
        expect=201,
        requests=sizes.pickup_jobs,
        clients=64,
    )
    freeze_startup_objects()  # no full collection of the whole bench may stall the pacing
    paced(load, sizes.pickup_rate)
    _wait(lambda: not stack.unfinished("pickup"), 120, "the pickups")
    stack.stop(fleet)
    stack.stop(stack.processes[-1])
    with stack.ctx.db.transaction() as session:
        waits = readout.pickup_milliseconds(session, "pickup")
    return {f"p{q}_ms": _percentile(waits, q) for q in (50, 95, 99)}


def ceiling(stack: Stack, sizes: Sizes) -> dict[str, float]:
    return {
        "postgres_insert_commit_per_second": insert_commit_rate(
            stack.settings.database_url, sizes.ceiling_seconds
        ),
        "redis_push_pop_pairs_per_second": push_pop_rate(
            stack.settings.redis_url, f"{stack.settings.key_prefix}:ceiling", sizes.ceiling_seconds
        ),
    }


# -- the run --------------------------------------------------------------------------------


@dataclass
class Report:
    results: dict[str, list[dict[str, float]]] = field(default_factory=dict)

    def add(self, name: str, figures: dict[str, float]) -> None:
        self.results.setdefault(name, []).append(figures)
        shown = ", ".join(f"{k}={v:,.1f}" for k, v in figures.items())
        print(f"  {name}: {shown}", flush=True)

    def table(self) -> str:
        lines = [f"{'workload':<24}{'figure':<36}{'median':>12}{'min':>12}{'max':>12}"]
        for name, runs in self.results.items():
            for figure in runs[0]:
                values = [run[figure] for run in runs]
                shown = (statistics.median(values), min(values), max(values))
                columns = "".join(f"{_figure(value):>12}" for value in shown)
                lines.append(f"{name:<24}{figure:<36}{columns}")
        return "\n".join(lines)


def run(
    settings: Settings,
    runs: int,
    quick: bool,
    only: list[str],
    api_workers: int,
    out: Path = ROOT / "bench-results",
) -> int:
    sizes = QUICK if quick else Sizes()
    stack = Stack(settings, api_workers)
    workloads: dict[str, Callable[[], dict[str, float]]] = {
        "ceiling": lambda: ceiling(stack, sizes),
        "submit-http": lambda: submit_http(stack, sizes),
        "submit-batch": lambda: submit_batch(stack, sizes),
        "drain-2x2": lambda: drain(stack, sizes, 2, 2),
        "drain-4x1": lambda: drain(stack, sizes, 4, 1),
        "drain-2x2-history": lambda: drain(stack, sizes, 2, 2, sizes.history_jobs),
        "pickup": lambda: pickup(stack, sizes),
    }
    chosen = [name for name in workloads if not only or name in only]
    report = Report()
    try:
        for name in chosen:
            for _ in range(runs):
                stack.reset()
                report.add(name, workloads[name]())
    finally:
        stack.close()
    print("\n" + report.table())
    out.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    path = out / f"bench-{stamp}.json"
    machine = {"cpus": os.cpu_count(), "python": platform.python_version(), "host": platform.node()}
    summary = {"at": stamp, "quick": quick, "runs": runs, "machine": machine}
    path.write_text(json.dumps({**summary, "results": report.results}, indent=2))
    print(f"\nwritten to {path}")
    return 0
