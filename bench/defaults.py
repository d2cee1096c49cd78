"""The default-settings workload: Jobfleet as the README and the compose file run it, loaded by
k6.

The API runs with its default settings (two workers as in the compose file, INFO logs, rate
limits on at their default values, one JSON line per request written to a file, as a container
runtime takes them from a pipe), a fleet of 2 processes x 2 threads runs every job on the
`default` queue with its periodic duties, and k6 (`tests/load/throughput.js`) submits jobs at a
steady rate from producers with keys of their own, as many applications of several tenants
would. The figures: jobs submitted and completed per second, the request latency k6 saw, and
the CPU each job cost the API, the fleet and k6.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.services import auth
from app.settings import Settings
from bench import readout
from bench.load import process_tree_cpu_seconds
from bench.stack import Stack
from devtools.processes import ROOT
from devtools.waiting import wait_until

QUEUE = "default"
TENANTS = 4
KEYS = 16
PROFILE = ROOT / "tests" / "load" / "throughput.js"
K6_THRESHOLDS_CROSSED = 99


@dataclass(frozen=True)
class Shape:
    rate: float  # submits per second that k6 offers
    seconds: int  # for how long


def default_settings(stack: Stack) -> Settings:
    """The benchmark's database and keys with what a deployment runs by default: logs at INFO
    and rate limits on, at the values a fresh `.env` has."""
    fields = Settings.model_fields
    defaults = {
        name: fields[name].default
        for name in fields
        if name.startswith("rate_limit_") or name == "log_level"
    }
    return stack.settings.model_copy(update=defaults)


def measure(stack: Stack, shape: Shape) -> dict[str, float]:
    settings = default_settings(stack)
    keys = [
        auth.create_key(stack.ctx, f"tenant-{n % TENANTS}", [auth.Scope.PRODUCER])[1]
        for n in range(KEYS)
    ]
    with tempfile.TemporaryDirectory(prefix="jobfleet-bench-defaults-") as folder:
        logs = Path(folder)
        with (logs / "api.log").open("wb") as api_log, (logs / "fleet.log").open("wb") as log:
            url = stack.start_api(settings, api_log)
            api = stack.processes[-1]
            fleet = stack.start_fleet(2, 2, QUEUE, settings, log)
            # Warm-up, left out of the figures: every API worker and every key seen once.
            _k6(url, keys, Shape(rate=100, seconds=2), logs / "warm-up.json")
            wait_until(lambda: not stack.unfinished(QUEUE), 120, what="the warm-up jobs")
            since = time.time()  # the machine's clock, as Postgres' is
            cpu = [process_tree_cpu_seconds(process.pid) for process in (api, fleet)]
            database = _database_work(stack)
            summary, k6_cpu = _k6(url, keys, shape, logs / "summary.json")
            wait_until(lambda: not stack.unfinished(QUEUE), 600, what="the submitted jobs")
            cpu = [
                process_tree_cpu_seconds(p.pid) - c for p, c in zip((api, fleet), cpu, strict=True)
            ]
            database_after = _database_work(stack)
            stack.stop(fleet)
            stack.stop(api)
        lines = sum(_lines(logs / name) for name in ("api.log", "fleet.log"))
    with stack.ctx.db.transaction() as session:
        done = readout.throughput(session, QUEUE, since)
        every = readout.throughput(session, QUEUE).jobs  # the warm-up's too, as the logs are
    if not done.completed == done.attempts == done.jobs:
        raise RuntimeError(f"defaults: not every job completed exactly once: {done}")
    metrics = summary["metrics"]
    submitted = int(metrics["http_reqs"]["count"])
    duration = metrics["http_req_duration"]
    return {
        "offered_per_second": shape.rate,
        "submitted_per_second": float(metrics["iterations"]["rate"]),
        # From the first measured job's insert to the last finish.
        "completed_per_second": done.jobs / done.seconds if done.seconds else 0.0,
        "completion_behind_s": done.behind,
        "request_p50_ms": float(duration["med"]),
        "request_p95_ms": float(duration["p(95)"]),
        "request_p99_ms": float(duration["p(99)"]),
        "failed_requests": float(metrics["http_req_failed"]["passes"]),
        "dropped_submits": float(metrics.get("dropped_iterations", {}).get("count", 0)),
        "api_cpu_ms_per_job": cpu[0] / submitted * 1000,
        "fleet_cpu_ms_per_job": cpu[1] / submitted * 1000,
        "k6_cpu_ms_per_job": k6_cpu / submitted * 1000,
        # Postgres' own statistics (pg_stat_database), its statements' time and its commits.
        "postgres_active_ms_per_job": (database_after.active_ms - database.active_ms) / submitted,
        "commits_per_job": (database_after.commits - database.commits) / submitted,
        "log_lines_per_job": lines / every,
    }


def _k6(url: str, keys: list[str], shape: Shape, summary: Path) -> tuple[dict[str, Any], float]:
    """Run the throughput profile; its exported summary and the CPU k6 spent."""
    env = {
        **os.environ,
        "BASE_URL": url,
        "JOBFLEET_KEYS": ",".join(keys),
        "RATE": str(shape.rate),
        "DURATION": f"{shape.seconds}s",
        "QUEUE": QUEUE,
        "TASK": "noop",
        "K6_NO_USAGE_REPORT": "true",
    }
    k6 = Path(sys.executable).with_name("k6")
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    ran = subprocess.run(
        [str(k6), "run", "--quiet", "--no-color", "--summary-export", str(summary), str(PROFILE)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=shape.seconds + 120,
    )
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    # 99: a threshold was crossed; the figures say which, and the benchmark reports them.
    if ran.returncode not in (0, K6_THRESHOLDS_CROSSED):
        raise RuntimeError(f"k6 exited with {ran.returncode}: {ran.stderr[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    document: dict[str, Any] = json.loads(summary.read_text())
    return document, cpu


def _database_work(stack: Stack) -> readout.DatabaseWork:
    with stack.ctx.db.transaction() as session:
        return readout.database_work(session)


def _lines(path: Path) -> int:
    with path.open("rb") as log:
        return sum(1 for _ in log)
