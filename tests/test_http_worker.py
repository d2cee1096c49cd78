"""The HTTP worker runtime (jobfleet.worker) as applications run it: processes of their own
(tests/http_worker_app.py) against a live API, on a queue the native fleet does not serve. Jobs
complete once, a worker killed or paused mid-task has its job recovered and run by another,
cancellations reach the task, and SIGTERM lets the running task finish before the exit."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from jobfleet import Client
from jobfleet.errors import Forbidden
from jobfleet.worker import NonRetryable, Worker
from sqlalchemy import text

from app.services.context import Context
from tests.fleet_support import FAST_RETRIES, all_done
from tests.helpers import ROOT, LiveAPI, terminate, wait_until

pytestmark = pytest.mark.live

QUEUE = "http-only"  # the native fleets of these tests serve `default` only
APP = ROOT / "tests" / "http_worker_app.py"


class HttpWorker:
    """`python tests/http_worker_app.py <worker_id>`: its stderr (the worker's log) is kept."""

    def __init__(self, url: str, key: str, worker_id: str, **env: str) -> None:
        self.worker_id = worker_id
        environment = {
            **os.environ,
            # This checkout's client package, not whichever the venv's editable install names.
            "PYTHONPATH": str(ROOT / "client" / "src"),
            "JOBFLEET_URL": url,
            "JOBFLEET_KEY": key,
            "WORKER_QUEUES": QUEUE,
            **env,
        }
        self.process = subprocess.Popen(
            [sys.executable, str(APP), worker_id],
            env=environment,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.log: list[str] = []
        assert self.process.stderr is not None
        stderr = self.process.stderr
        self._reader = threading.Thread(target=lambda: self.log.extend(stderr), daemon=True)
        self._reader.start()

    def logged(self, fragment: str) -> bool:
        return any(fragment in line for line in list(self.log))

    def signal(self, signum: signal.Signals) -> None:
        self.process.send_signal(signum)

    def stopped(self, timeout: float = 30) -> tuple[int, str]:
        """Its exit status and its last line on stdout, once it has exited by itself."""
        status = self.process.wait(timeout)
        assert self.process.stdout is not None
        return status, self.process.stdout.read().strip()

    def close(self) -> None:
        terminate(self.process, 5)
        self._reader.join(5)
        for stream in (self.process.stdout, self.process.stderr):
            if stream is not None:
                stream.close()


@pytest.fixture
def http_workers(live_api: LiveAPI, make_key: Callable[..., str]) -> Iterator[Any]:
    started: list[HttpWorker] = []

    def start(worker_id: str, **env: str) -> HttpWorker:
        worker = HttpWorker(live_api.url, make_key("acme", "worker"), worker_id, **env)
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.close()


@pytest.fixture
def producer_client(live_api: LiveAPI, make_key: Callable[..., str]) -> Iterator[Client]:
    with Client(live_api.url, make_key("acme", "producer")) as client:
        yield client


def job_rows(ctx: Context) -> dict[str, Any]:
    with ctx.db.transaction() as session:
        rows = session.execute(text("SELECT * FROM jobs")).all()
    return {str(row.id): row for row in rows}


def attempts_by_job(ctx: Context) -> dict[str, list[tuple[int, str, str]]]:
    with ctx.db.transaction() as session:
        rows = session.execute(
            text("SELECT job_id, attempt, worker_id, outcome FROM job_attempts ORDER BY id")
        ).all()
    found: dict[str, list[tuple[int, str, str]]] = {}
    for row in rows:
        found.setdefault(str(row.job_id), []).append((row.attempt, row.worker_id, row.outcome))
    return found


def test_200_jobs_at_concurrency_4_complete_once_and_failures_are_nacked(
    ctx: Context, start_fleet: Any, producer_client: Client, http_workers: Any
) -> None:
    start_fleet(processes=1, threads=1)  # serves `default`: it must take none of these
    jobs = [{"task": "echo", "payload": {"n": n}, "queue": QUEUE} for n in range(200)]
    jobs += [
        {"task": "boom", "payload": {"message": "no ink"}, "queue": QUEUE, "max_retries": 0},
        {"task": "nobody-runs-this", "queue": QUEUE, "max_retries": 5},
    ]
    submitted = producer_client.submit_many(jobs)
    assert submitted.created == 202
    worker = http_workers("w1", WORKER_CONCURRENCY="4")

    wait_until(lambda: all_done(ctx, 202, ("completed", "failed")), timeout=60)
    worker.signal(signal.SIGTERM)
    status, last_line = worker.stopped()
    # Leased 202 times for 202 jobs: no job ran twice. 200 acked, 2 nacked, none dropped.
    assert (status, last_line) == (0, "stopped 202 200 2 0")

    rows, history = job_rows(ctx), attempts_by_job(ctx)
    echoed = [rows[i] for i in submitted.ids[:200] if i is not None]
    assert [(r.status, r.attempts, r.worker_id) for r in echoed] == [
        ("completed", 1, "http:w1")
    ] * 200
    assert [r.result for r in echoed] == [{"n": n} for n in range(200)]
    assert all(history[str(r.id)] == [(1, "http:w1", "completed")] for r in echoed)

    boom, unknown = (rows[str(i)] for i in submitted.ids[200:])
    assert boom.status == "failed" and boom.last_error.startswith("RuntimeError: no ink (at ")
    # An unknown task is not retried, whatever its max_retries.
    assert (unknown.status, unknown.attempts) == ("failed", 1)
    assert unknown.last_error.startswith("unknown task 'nobody-runs-this': this worker runs ")


def test_a_worker_killed_mid_task_has_its_job_recovered_and_run_by_another(
    ctx: Context, start_fleet: Any, producer_client: Client, http_workers: Any
) -> None:
    start_fleet(processes=0, **FAST_RETRIES)  # a manager alone: its duties recover leases
    job = producer_client.submit("hold", {"seconds": 60, "then": 0}, queue=QUEUE, max_retries=2)
    doomed = http_workers("doomed", LEASE_SECONDS="2", WORKER_CONCURRENCY="1")
    wait_until(lambda: job_rows(ctx)[job.id].worker_id == "http:doomed", timeout=30)
    assert job_rows(ctx)[job.id].status == "processing"

    doomed.signal(signal.SIGKILL)
    assert doomed.stopped()[0] == -signal.SIGKILL
    http_workers("rescuer", LEASE_SECONDS="2", WORKER_CONCURRENCY="1")

    done = producer_client.wait(job.id, timeout=30)
    assert done.result == {"attempt": 2, "worker": "rescuer", "cancelled": False}
    history = producer_client.get(job.id).history
    assert history is not None
    assert [(a.attempt, a.worker_id, a.outcome) for a in history] == [
        (1, "http:doomed", "lost"),
        (2, "http:rescuer", "completed"),
    ]


def test_a_worker_paused_past_its_lease_drops_the_job_and_reports_nothing(
    ctx: Context, start_fleet: Any, producer_client: Client, http_workers: Any
) -> None:
    start_fleet(processes=0, **FAST_RETRIES)
    job = producer_client.submit("hold", {"seconds": 60, "then": 0}, queue=QUEUE, max_retries=2)
    frozen = http_workers("frozen", LEASE_SECONDS="2", WORKER_CONCURRENCY="1")
    wait_until(lambda: job_rows(ctx)[job.id].worker_id == "http:frozen", timeout=30)

    frozen.signal(signal.SIGSTOP)  # no heartbeat while it is stopped: the lease runs out
    try:
        http_workers("rescuer", LEASE_SECONDS="2", WORKER_CONCURRENCY="1")
        done = producer_client.wait(job.id, timeout=30)
        assert done.result == {"attempt": 2, "worker": "rescuer", "cancelled": False}
    finally:
        frozen.signal(signal.SIGCONT)
    # Woken, its next heartbeat answers 409 lease-lost: the task is told (job.cancelled) and
    # returns, and the worker reports nothing for it.
    wait_until(lambda: frozen.logged("lease lost"), timeout=30)
    frozen.signal(signal.SIGTERM)
    assert frozen.stopped() == (0, "stopped 1 0 0 1")
    after = producer_client.get(job.id)
    assert (after.status, after.result, after.worker_id) == (
        "completed",
        done.result,
        "http:rescuer",
    )
    assert after.history is not None
    assert [(a.worker_id, a.outcome) for a in after.history] == [
        ("http:frozen", "lost"),
        ("http:rescuer", "completed"),
    ]


def test_sigterm_lets_the_running_task_finish_then_exits_zero(
    ctx: Context, producer_client: Client, http_workers: Any, tmp_path: Path
) -> None:
    finish = tmp_path / "finish"
    slow = producer_client.submit("hold", {"seconds": 60, "until": str(finish)}, queue=QUEUE)
    waiting = producer_client.submit("echo", {"n": 1}, queue=QUEUE)
    worker = http_workers("t1", WORKER_CONCURRENCY="1")
    wait_until(lambda: job_rows(ctx)[slow.id].status == "processing", timeout=30)

    worker.signal(signal.SIGTERM)
    wait_until(lambda: worker.logged("stopping on SIGTERM"), timeout=10)
    assert worker.process.poll() is None  # still running its task
    finish.touch()
    assert worker.stopped() == (0, "stopped 1 1 0 0")
    finished = producer_client.get(slow.id)
    assert (finished.status, finished.result) == (
        "completed",
        {"attempt": 1, "worker": "t1", "cancelled": False},
    )
    # Nothing was leased after the signal.
    assert producer_client.get(waiting.id).status == "queued"


def test_a_cancellation_reaches_the_running_task(
    ctx: Context, producer_client: Client, http_workers: Any
) -> None:
    slow = producer_client.submit("hold", {"seconds": 60}, queue=QUEUE)
    worker = http_workers("c1", WORKER_CONCURRENCY="1", LEASE_SECONDS="1.5")
    wait_until(lambda: job_rows(ctx)[slow.id].status == "processing", timeout=30)
    assert producer_client.cancel(slow.id).cancel_requested
    # The next heartbeat (every half second) tells the task, which returns; its ack ends the
    # job cancelled, long before its minute is up.
    wait_until(lambda: producer_client.get(slow.id).status == "cancelled", timeout=15)
    history = producer_client.get(slow.id).history
    assert history is not None and [(a.worker_id, a.outcome) for a in history] == [
        ("http:c1", "cancelled")
    ]
    worker.signal(signal.SIGTERM)
    assert worker.stopped() == (0, "stopped 1 1 0 0")


def test_in_process_max_jobs_burst_and_results_the_api_cannot_store(
    live_api: LiveAPI, make_key: Callable[..., str], producer_client: Client
) -> None:
    q = "http-in-process"
    jobs: list[dict[str, Any]] = [
        {"task": "echo", "payload": {"n": n}, "queue": q} for n in range(3)
    ]
    jobs += [
        {"task": "a_set", "queue": q},  # returns a set: not JSON
        {"task": "nul", "queue": q},  # returns a NUL character: JSON the API refuses to store
        {"task": "refuse", "queue": q, "max_retries": 3},  # raises NonRetryable
    ]
    ids = producer_client.submit_many(jobs).ids
    with Client(live_api.url, make_key("acme", "worker")) as client:
        worker = Worker(client, [q], concurrency=2, wait_seconds=0, handle_signals=False)
        worker.task("echo")(lambda payload: payload)
        worker.task("a_set")(lambda payload: {1, 2})
        worker.task("nul")(lambda payload: "a\x00b")

        @worker.task("refuse")
        def refuse(payload: Any) -> None:
            raise NonRetryable("the payload names no customer")

        assert worker.run(max_jobs=2).leased == 2
        stats = worker.run(burst=True)  # until every queue is empty
        assert (stats.leased, stats.completed, stats.failed, stats.dropped) == (4, 1, 3, 0)

    found = {job_id: producer_client.get(str(job_id)) for job_id in ids}
    outcomes = [(j.task, j.status, j.attempts, j.last_error) for j in found.values()]
    assert outcomes[:3] == [("echo", "completed", 1, None)] * 3
    assert outcomes[3][:3] == ("a_set", "failed", 1)
    assert str(outcomes[3][3]).startswith("the result is not JSON: Object of type set")
    assert outcomes[4][:3] == ("nul", "failed", 1)
    assert str(outcomes[4][3]).startswith("the result was refused: body.result")
    assert outcomes[5][:3] == ("refuse", "failed", 1)
    assert str(outcomes[5][3]).startswith("NonRetryable: the payload names no customer (at ")

    # A key without the worker scope cannot lease: run() stops and says why.
    with Client(live_api.url, make_key("acme", "producer")) as client:
        refused = Worker(client, [q], handle_signals=False)
        refused.task("echo")(lambda payload: payload)
        with pytest.raises(Forbidden):
            refused.run()
    with pytest.raises(ValueError, match="worker_id"):
        Worker(producer_client, [q], worker_id="no spaces")
    with pytest.raises(ValueError, match="registered already"):
        worker.task("echo")(print)
