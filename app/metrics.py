"""The metric objects, correct across processes.

Every API worker and every fleet child counts in its own process. With PROMETHEUS_MULTIPROC_DIR
set (the `api` and `worker` commands set it before anything imports prometheus_client), each
process writes its values to files in that directory and a scrape merges them, so counters of
children that died still count. Without it (one process, e.g. `uvicorn app.main:app`), a
registry of the process holds them. Nothing is created at import time.
"""

from __future__ import annotations

import os
import tempfile
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # type names only: importing prometheus_client early would fix its mode
    from prometheus_client import CollectorRegistry
    from prometheus_client.metrics_core import Metric
    from prometheus_client.registry import Collector

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

# Jobs run from a millisecond to ten minutes; HTTP requests from a fraction of a millisecond.
JOB_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60,
               120, 300, 600)  # fmt: skip
HTTP_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


def prepare_multiprocess_dir(base: str, role: str) -> str:
    """Point this process (and the processes it starts) at an empty metrics directory of its
    own, `<base>/<role>` (a fresh temporary base when empty). Must run before
    prometheus_client is imported; files of an earlier run are removed."""
    path = Path(base or tempfile.mkdtemp(prefix="jf-metrics-")) / role
    path.mkdir(parents=True, exist_ok=True)
    # prometheus_client keeps one flat file per process and metric kind, named *.db.
    for stale in path.glob("*.db"):
        stale.unlink()
    os.environ[MULTIPROC_ENV] = str(path)
    return str(path)


class Metrics:
    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Histogram

        self.multiprocess = MULTIPROC_ENV in os.environ
        # In multiprocess mode values live in files and a registry is built per scrape.
        self.registry = None if self.multiprocess else CollectorRegistry()
        registry = self.registry
        job = ["queue", "task"]
        self.jobs_created = Counter(
            "jobfleet_jobs_created", "Jobs accepted by the API.", job, registry=registry
        )
        self.jobs_completed = Counter(
            "jobfleet_jobs_completed", "Jobs finished successfully.", job, registry=registry
        )
        self.jobs_failed = Counter(
            "jobfleet_jobs_failed", "Failed attempts (any cause).", job, registry=registry
        )
        self.jobs_retried = Counter(
            "jobfleet_jobs_retried",
            "Failed attempts scheduled for a retry.",
            job,
            registry=registry,
        )
        self.jobs_dead_lettered = Counter(
            "jobfleet_jobs_dead_lettered",
            "Jobs out of retries, moved to the dead-letter queue.",
            job,
            registry=registry,
        )
        self.jobs_recovered = Counter(
            "jobfleet_jobs_recovered",
            "Running jobs recovered from a dead or silent worker.",
            ["queue"],
            registry=registry,
        )
        self.jobs_cancelled = Counter(
            "jobfleet_jobs_cancelled", "Jobs cancelled.", ["queue"], registry=registry
        )
        self.claims_skipped = Counter(
            "jobfleet_claims_skipped",
            "Popped ids whose job was no longer queued (stale or duplicate): dropped.",
            registry=registry,
        )
        self.job_duration = Histogram(
            "jobfleet_job_duration_seconds",
            "Run time of finished attempts.",
            job,
            buckets=JOB_BUCKETS,
            registry=registry,
        )
        self.job_wait = Histogram(
            "jobfleet_job_wait_seconds",
            "Time from ready (enqueue or run_at) to start.",
            job,
            buckets=JOB_BUCKETS,
            registry=registry,
        )
        self.http_requests = Counter(
            "jobfleet_http_requests",
            "HTTP requests by method, route template and status.",
            ["method", "route", "status"],
            registry=registry,
        )
        self.http_latency = Histogram(
            "jobfleet_http_request_duration_seconds",
            "HTTP request latency by method and route template.",
            ["method", "route"],
            buckets=HTTP_BUCKETS,
            registry=registry,
        )

    def exposition(self, extra: Iterable[Collector] = ()) -> tuple[bytes, str]:
        """The text a scrape gets: this process's (or every process's) metrics plus `extra`
        collectors computed now."""
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.scrape_registry(extra)), CONTENT_TYPE_LATEST

    def scrape_registry(self, extra: Iterable[Collector] = ()) -> CollectorRegistry:
        """A registry whose every collection reads the metrics afresh: the files of every
        process in multiprocess mode, else this process's registry; plus `extra`."""
        from prometheus_client import CollectorRegistry
        from prometheus_client.multiprocess import MultiProcessCollector

        registry = CollectorRegistry()
        if self.multiprocess:
            MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        else:
            assert self.registry is not None
            registry.register(_Delegate(self.registry))
        for collector in extra:
            registry.register(collector)
        return registry


class _Delegate:
    """Lends the process registry's metrics to a per-scrape registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry

    def collect(self) -> Iterable[Metric]:
        return self.registry.collect()


_instance: Metrics | None = None
_lock = threading.Lock()


def metrics() -> Metrics:
    """This process's metric objects, made on first use."""
    global _instance
    if _instance is None:
        with _lock:
            if _instance is None:
                _instance = Metrics()
    return _instance


def mark_process_dead(pid: int) -> None:
    """Drop the live-gauge files of a dead child (its counters stay: they still count)."""
    if MULTIPROC_ENV in os.environ:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]
