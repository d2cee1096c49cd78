"""The HTTP worker runtime: run Python functions as Jobfleet tasks in any process, over the API's
lease protocol (docs/API.md, "HTTP lease protocol"), without being part of the managed fleet.

    from jobfleet import Client
    from jobfleet.worker import Worker

    worker = Worker(Client(key=WORKER_KEY), queues=["reports"], concurrency=4)

    @worker.task("render_report")
    def render_report(payload, job):
        ...
        return {"pages": 12}

    worker.run()  # until SIGTERM or SIGINT

Each of `concurrency` threads runs one job at a time: it leases the next job of its queues (a long
poll, the queues in turn), calls the task's function, renews the lease while the function runs
(a heartbeat every third of the lease), then acks with the return value or nacks with the
exception's text. SIGTERM or SIGINT stops leasing; the jobs that are running finish and are
reported, then `run()` returns. A second signal exits at once: the jobs still running are
recovered by the server when their leases expire, and run again.

What a Python function cannot do is stop in the middle: a thread cannot be interrupted. So a
cancellation request, a lost lease and a passed timeout are all told to the function through
its `job` argument (`job.cancelled` turns true) and it should return early; the worker decides
what to report afterwards (see `JobContext`).
"""

from __future__ import annotations

import contextlib
import inspect
import json
import logging
import os
import re
import signal
import socket
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from types import FrameType
from typing import TYPE_CHECKING, Any, TypeVar

from jobfleet.errors import (
    APIError,
    JobfleetError,
    LeaseLost,
    NotFound,
    RateLimited,
    TransportError,
    Unavailable,
    ValidationError,
)

if TYPE_CHECKING:
    from jobfleet.client import Client
    from jobfleet.models import Job, Lease

__all__ = ["JobContext", "NonRetryable", "Worker", "WorkerStats"]

log = logging.getLogger("jobfleet.worker")

F = TypeVar("F", bound=Callable[..., Any])

WORKER_ID = re.compile(r"^[A-Za-z0-9_.:@-]{1,120}$")
# The API's bounds (docs/API.md): lease_seconds 1..3600, wait_seconds 0..30, a nack's error at
# most 10,000 characters.
MAX_LEASE_SECONDS = 3600.0
MAX_WAIT_SECONDS = 30.0
MAX_ERROR_CHARS = 10_000
# After an error that may pass (the API unreachable, 503, 429), a lease loop waits this long
# before it asks again, doubling up to the cap; a report is tried again until the lease expires.
RETRY_PAUSE = 0.5
RETRY_PAUSE_CAP = 10.0
# Without a long poll (wait_seconds=0), a lease loop that found every queue empty waits this long.
IDLE_PAUSE = 0.5
# A value the API can store as a result: JSON, finite numbers only.
_json_encoder = json.JSONEncoder(allow_nan=False)


class NonRetryable(Exception):
    """Raised by a task when another attempt cannot help (a malformed payload, say): the job goes
    to the dead-letter queue at once, with this error, instead of being retried."""


@dataclass
class WorkerStats:
    """What a worker did since `run()` started."""

    leased: int = 0
    completed: int = 0  # acked
    failed: int = 0  # nacked
    dropped: int = 0  # the lease was lost (or the job deleted): nothing reported


@dataclass
class JobContext:
    """The running job, as its task function sees it (a parameter named `job`).

    `cancelled` turns true when the function should stop early and return:

    - a cancellation was requested (`cancel_requested`): the worker keeps the lease and, once the
      function returns, reports as usual; the API ends the job `cancelled` whatever is reported.
    - the lease was lost (`lease_lost`): the server presumed this worker dead and another may be
      running the job. Nothing more is reported for it; what the function returns is dropped.
    - the job ran past its `timeout_seconds` (`timed_out`): the worker stops renewing the lease,
      so the server's recovery records the attempt as a timeout and retries it by its policy;
      what the function returns afterwards is reported only if the server has not yet taken the
      job back (the report is fenced by the lease token).
    """

    job: Job
    lease_token: str
    worker_id: str
    deadline: float  # time.time() when the job's timeout_seconds runs out
    lease_expires_at: float  # time.time() when the lease runs out unless renewed
    _cancel: threading.Event = field(default_factory=threading.Event, repr=False)
    _lost: threading.Event = field(default_factory=threading.Event, repr=False)
    _timed_out: threading.Event = field(default_factory=threading.Event, repr=False)

    @property
    def id(self) -> str:
        return str(self.job.id)

    @property
    def queue(self) -> str:
        return self.job.queue

    @property
    def task(self) -> str:
        return self.job.task

    @property
    def payload(self) -> Any:
        return self.job.payload

    @property
    def attempt(self) -> int:
        """1 for the first run, 2 for the first retry, ..."""
        return self.job.attempts

    @property
    def max_retries(self) -> int:
        return self.job.max_retries

    @property
    def cancel_requested(self) -> bool:
        return self._cancel.is_set()

    @property
    def lease_lost(self) -> bool:
        return self._lost.is_set()

    @property
    def timed_out(self) -> bool:
        return self._timed_out.is_set()

    @property
    def cancelled(self) -> bool:
        """True once the function should return early: cancellation, lost lease or timeout."""
        return self.cancel_requested or self.lease_lost or self.timed_out


@dataclass(frozen=True)
class _Outcome:
    """What the worker reports: an ack with `result`, or a nack with `error`."""

    ok: bool
    result: Any = None
    error: str = ""
    retry: bool = True


@dataclass(frozen=True)
class _Registered:
    function: Callable[..., Any]
    takes_job: bool  # the function has a parameter named `job`: it gets the JobContext


class Worker:
    """Runs registered functions as the tasks of jobs leased from `queues`.

    `client` needs a key with the `worker` scope (its tenant's jobs) or `admin` (any tenant's).
    `concurrency` threads each run one job at a time. `worker_id` names this worker in the jobs'
    `worker_id` (as `http:<worker_id>`); by default `<host>:<pid>`. `lease_seconds` is how long a
    lease lasts without a heartbeat: a worker that dies leaves its jobs to recovery after at most
    that long. `wait_seconds` is how long one lease request waits for a job; it also bounds how
    long a stop waits for threads that are polling.
    """

    def __init__(
        self,
        client: Client,
        queues: Sequence[str],
        *,
        concurrency: int = 1,
        worker_id: str | None = None,
        lease_seconds: float = 30.0,
        wait_seconds: float = 5.0,
        handle_signals: bool = True,
    ) -> None:
        if isinstance(queues, str):
            queues = [queues]
        if not queues:
            raise ValueError("a worker needs at least one queue")
        if concurrency < 1:
            raise ValueError(f"concurrency must be 1 or more, not {concurrency}")
        if not 1 <= lease_seconds <= MAX_LEASE_SECONDS:
            raise ValueError(f"lease_seconds must be within 1..{MAX_LEASE_SECONDS:g}")
        if not 0 <= wait_seconds <= MAX_WAIT_SECONDS:
            raise ValueError(f"wait_seconds must be within 0..{MAX_WAIT_SECONDS:g}")
        chosen_id = worker_id if worker_id is not None else default_worker_id()
        if not WORKER_ID.match(chosen_id):
            raise ValueError(
                f"worker_id {chosen_id!r}: 1 to 120 characters of A-Za-z0-9_.:@- expected"
            )
        self.client = client
        self.queues = list(queues)
        self.concurrency = concurrency
        self.worker_id = chosen_id
        self.lease_seconds = float(lease_seconds)
        self.wait_seconds = float(wait_seconds)
        self.handle_signals = handle_signals
        self.stats = WorkerStats()
        self._tasks: dict[str, _Registered] = {}
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._budget: int | None = None  # jobs left to lease under run(max_jobs=...)
        self._fatal: JobfleetError | None = None
        self._running: dict[str, JobContext] = {}

    # Registration ---------------------------------------------------------------------------

    def task(self, name: str) -> Callable[[F], F]:
        """Register the decorated function as the task `name`; the function is returned as it is.

        It is called with the job's payload, and with the `JobContext` as `job=` when it has a
        parameter named `job`. Its return value (JSON) becomes the job's result; an exception
        fails the attempt (retried by the job's policy; `NonRetryable`: not retried).
        """

        def register(function: F) -> F:
            self.register(name, function)
            return function

        return register

    def register(self, name: str, function: Callable[..., Any]) -> None:
        """Register `function` as the task `name` (what `@worker.task(name)` does)."""
        if not name:
            raise ValueError("a task needs a name")
        if name in self._tasks:
            raise ValueError(f"task {name!r} is registered already")
        try:
            takes_job = "job" in inspect.signature(function).parameters
        except (TypeError, ValueError):  # a builtin without a signature: payload only
            takes_job = False
        self._tasks[name] = _Registered(function, takes_job)

    @property
    def tasks(self) -> list[str]:
        """The registered task names."""
        return sorted(self._tasks)

    # Running --------------------------------------------------------------------------------

    def run(self, *, max_jobs: int | None = None, burst: bool = False) -> WorkerStats:
        """Lease and run jobs until `stop()`, SIGTERM or SIGINT; then let the running jobs finish
        and report them, and return what was done.

        `max_jobs`: stop after leasing that many jobs (and finishing them). `burst`: stop once
        every queue answers that it has no job ready (no waiting; jobs scheduled for later are
        left). Raises the API's error when leasing is refused for good (a key without the
        `worker` scope, say): every thread stops.
        """
        if not self._tasks:
            raise ValueError("no task is registered: use @worker.task(name)")
        self._stopping.clear()
        self._fatal = None
        self._budget = max_jobs
        self.stats = WorkerStats()
        threads = [
            threading.Thread(
                target=self._lease_loop,
                args=(n, burst),
                name=f"jobfleet-worker-{n}",
                daemon=True,  # a second signal exits without them
            )
            for n in range(self.concurrency)
        ]
        log.info(
            "worker %s starting: queues %s, %d threads, tasks %s",
            self.worker_id, ",".join(self.queues), self.concurrency, ",".join(self.tasks),
            extra={"action": "worker_started", "worker_id": self.worker_id},
        )  # fmt: skip
        with self._signals_handled():
            for thread in threads:
                thread.start()
            for thread in threads:
                # Joined in short waits: Python runs a signal's handler in the main thread only,
                # and when the kernel hands SIGTERM to one of the job threads, a main thread
                # blocked in a join without a timeout would not see it until that job ended.
                while thread.is_alive():
                    thread.join(0.25)
        log.info(
            "worker %s stopped: %s", self.worker_id, self.stats,
            extra={"action": "worker_stopped", "worker_id": self.worker_id},
        )  # fmt: skip
        if self._fatal is not None:
            raise self._fatal
        return self.stats

    def stop(self) -> None:
        """Stop leasing; `run()` returns once the running jobs are finished and reported. A
        thread waiting in a lease request finishes that request first (at most wait_seconds),
        and runs the job it may bring."""
        self._stopping.set()

    @property
    def running(self) -> list[JobContext]:
        """The jobs running now."""
        with self._lock:
            return list(self._running.values())

    @contextlib.contextmanager
    def _signals_handled(self) -> Iterator[None]:
        """SIGTERM and SIGINT stop the worker gracefully while `run()` runs; a second one exits
        at once. Only the main thread may set signal handlers: elsewhere, call `stop()`."""
        if not self.handle_signals or threading.current_thread() is not threading.main_thread():
            yield
            return
        signals = (signal.SIGTERM, signal.SIGINT)
        previous = {signum: signal.getsignal(signum) for signum in signals}

        def on_signal(signum: int, _: FrameType | None) -> None:
            if self._stopping.is_set():
                # Asked twice: leave now. The leases of running jobs expire and the server's
                # recovery runs those jobs again.
                raise SystemExit(128 + signum)
            log.info(
                "worker %s stopping on %s: %d running jobs finish first",
                self.worker_id, signal.Signals(signum).name, len(self.running),
                extra={"action": "worker_stopping", "worker_id": self.worker_id},
            )  # fmt: skip
            self.stop()

        for signum in signals:
            signal.signal(signum, on_signal)
        try:
            yield
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)

    def _lease_loop(self, n: int, burst: bool) -> None:
        """One thread: lease, run, report, until stopped. Its queues in turn, starting at its
        own, so that the threads of a worker are spread over them."""
        turn = n % len(self.queues)
        empty_in_a_row = 0
        pause = RETRY_PAUSE
        # With several queues a long poll on one delays the others: each poll waits its share.
        wait = 0.0 if burst else self.wait_seconds / len(self.queues)
        while not self._stopping.is_set():
            if not self._reserve():
                return
            queue = self.queues[turn]
            turn = (turn + 1) % len(self.queues)
            try:
                lease = self.client.lease(
                    queue, self.worker_id, lease_seconds=self.lease_seconds, wait_seconds=wait
                )
            except (TransportError, Unavailable, RateLimited) as exc:
                self._release()
                log.warning(
                    "lease of queue %s failed, asking again in %.1f s: %s", queue, pause, exc,
                    extra={"action": "lease_failed", "worker_id": self.worker_id, "queue": queue},
                )  # fmt: skip
                self._stopping.wait(pause)
                pause = min(pause * 2, RETRY_PAUSE_CAP)
                continue
            except JobfleetError as exc:
                # Refused for good (401, 403, 422, ...): asking again would be refused again.
                self._release()
                log.error(
                    "lease of queue %s refused, stopping the worker: %s", queue, exc,
                    extra={"action": "lease_refused", "worker_id": self.worker_id, "queue": queue},
                )  # fmt: skip
                with self._lock:
                    self._fatal = self._fatal or exc
                self.stop()
                return
            pause = RETRY_PAUSE
            if lease is None:
                self._release()
                empty_in_a_row += 1
                if burst and empty_in_a_row >= len(self.queues):
                    return
                if not wait and empty_in_a_row % len(self.queues) == 0:
                    # wait_seconds=0 and every queue empty: no long poll paces the loop.
                    self._stopping.wait(IDLE_PAUSE)
                continue
            empty_in_a_row = 0
            # A job leased after a stop was asked is run all the same: it is ours now, and a
            # lease handed back unused would still cost the job an attempt.
            try:
                self._work(lease)
            # A fault of this runtime with one job must not end the thread: the job's lease
            # expires and recovery runs it again, and this thread goes on with the next.
            except Exception:
                log.exception(
                    "job %s: the worker failed running it", lease.job.id,
                    extra={"action": "worker_error", "worker_id": self.worker_id},
                )  # fmt: skip

    def _reserve(self) -> bool:
        """Take one job from the budget of run(max_jobs=...) before leasing, so that threads
        polling at once never lease more than the budget; False when it is spent."""
        with self._lock:
            if self._budget is None:
                return True
            if self._budget <= 0:
                return False
            self._budget -= 1
            return True

    def _release(self) -> None:
        """Give back a reservation that leased nothing."""
        with self._lock:
            if self._budget is not None:
                self._budget += 1

    def _work(self, lease: Lease) -> None:
        """Run one leased job: call its task while a heartbeat renews the lease, then report."""
        job = lease.job
        now = time.time()
        context = JobContext(
            job=job,
            lease_token=str(lease.lease_token),
            worker_id=self.worker_id,
            deadline=now + job.timeout_seconds,
            # By this process's clock, within a round trip of the server's expiry: the two
            # clocks need not agree.
            lease_expires_at=now + self.lease_seconds,
        )
        with self._lock:
            self.stats.leased += 1
            self._running[context.id] = context
        log.info(
            "job %s leased: task %s, attempt %d", context.id, job.task, job.attempts,
            extra=self._fields(context, "job_leased"),
        )  # fmt: skip
        done = threading.Event()
        beat = threading.Thread(
            target=self._heartbeat_loop,
            args=(context, done),
            name=f"jobfleet-heartbeat-{context.id}",
            daemon=True,
        )
        beat.start()
        try:
            outcome = self._call(context)
        finally:
            # No renewal races the report: the lease has at least two thirds of its time left.
            done.set()
            beat.join()
        try:
            self._report(context, outcome)
        finally:
            with self._lock:
                self._running.pop(context.id, None)

    def _heartbeat_loop(self, context: JobContext, done: threading.Event) -> None:
        """Renew the lease every third of it while the task runs; learn of a cancellation.
        Stops renewing on a lost lease, and once the job's timeout has passed."""
        interval = self.lease_seconds / 3
        while not done.wait(interval):
            if time.time() >= context.deadline:
                context._timed_out.set()
                log.warning(
                    "job %s ran past its timeout of %d s: the lease is no longer renewed",
                    context.id, context.job.timeout_seconds,
                    extra=self._fields(context, "job_timed_out"),
                )  # fmt: skip
                return
            sent = time.time()
            try:
                _, cancel_requested = self.client.heartbeat(
                    context.id, context.lease_token, self.lease_seconds
                )
            except (LeaseLost, NotFound) as exc:
                context._lost.set()
                log.warning(
                    "job %s: lease lost (%s); its result will not be reported", context.id, exc,
                    extra=self._fields(context, "job_lease_lost"),
                )  # fmt: skip
                return
            except JobfleetError as exc:
                # The API may be back before the lease runs out: keep trying at the next beat.
                log.warning(
                    "job %s: heartbeat failed: %s", context.id, exc,
                    extra=self._fields(context, "heartbeat_failed"),
                )  # fmt: skip
                continue
            context.lease_expires_at = sent + self.lease_seconds
            if cancel_requested and not context.cancel_requested:
                context._cancel.set()
                log.info(
                    "job %s: cancellation requested", context.id,
                    extra=self._fields(context, "job_cancel_requested"),
                )  # fmt: skip

    def _call(self, context: JobContext) -> _Outcome:
        """Call the task's function; what to report."""
        registered = self._tasks.get(context.task)
        if registered is None:
            return _Outcome(
                ok=False,
                error=f"unknown task {context.task!r}: this worker runs {', '.join(self.tasks)}",
                retry=False,
            )
        try:
            if registered.takes_job:
                result = registered.function(context.payload, job=context)
            else:
                result = registered.function(context.payload)
        except NonRetryable as exc:
            return _Outcome(ok=False, error=describe(exc), retry=False)
        # Whatever a task raises fails its attempt, and the worker goes on with the next job.
        except Exception as exc:  # noqa: BLE001
            return _Outcome(ok=False, error=describe(exc))
        try:
            _json_encoder.encode(result)
        except (TypeError, ValueError) as exc:
            # As in the native fleet: a result that is not JSON fails the job without retries.
            return _Outcome(ok=False, error=f"the result is not JSON: {exc}", retry=False)
        return _Outcome(ok=True, result=result)

    def _report(self, context: JobContext, outcome: _Outcome) -> None:
        """Ack or nack, once. Nothing after a lost lease; errors that may pass are tried again
        until the lease runs out (then recovery runs the job again)."""
        pause = RETRY_PAUSE
        while not context.lease_lost:
            try:
                if outcome.ok:
                    self.client.ack(context.id, context.lease_token, outcome.result)
                    self._count("completed")
                    log.info(
                        "job %s completed", context.id, extra=self._fields(context, "job_acked")
                    )
                else:
                    error = storable_text(outcome.error)[:MAX_ERROR_CHARS]
                    where = self.client.nack(
                        context.id, context.lease_token, error, retry=outcome.retry
                    )
                    self._count("failed")
                    log.info(
                        "job %s failed (%s), now %s", context.id, outcome.error, where,
                        extra=self._fields(context, "job_nacked"),
                    )  # fmt: skip
                return
            except (LeaseLost, NotFound) as exc:
                context._lost.set()
                log.warning(
                    "job %s: lease lost (%s); nothing reported", context.id, exc,
                    extra=self._fields(context, "job_lease_lost"),
                )  # fmt: skip
            except ValidationError as exc:
                if not outcome.ok:
                    log.error(
                        "job %s: nack refused: %s", context.id, exc,
                        extra=self._fields(context, "job_report_refused"),
                    )  # fmt: skip
                    return
                # The API cannot store this result (too deep, a NUL, a huge integer): the
                # lease is still ours, and another attempt would return the same.
                outcome = _Outcome(
                    ok=False, error=f"the result was refused: {exc.detail}", retry=False
                )
            except (TransportError, Unavailable, RateLimited) as exc:
                if time.time() + pause >= context.lease_expires_at:
                    log.error(
                        "job %s: could not report before the lease ran out: %s", context.id, exc,
                        extra=self._fields(context, "job_report_failed"),
                    )  # fmt: skip
                    return
                time.sleep(pause)  # a report waits even when stopping: the job is done
                pause = min(pause * 2, RETRY_PAUSE_CAP)
            except APIError as exc:
                log.error(
                    "job %s: report refused: %s", context.id, exc,
                    extra=self._fields(context, "job_report_refused"),
                )  # fmt: skip
                return
        self._count("dropped")

    def _count(self, what: str) -> None:
        with self._lock:
            setattr(self.stats, what, getattr(self.stats, what) + 1)

    def _fields(self, context: JobContext, action: str) -> dict[str, Any]:
        return {
            "action": action,
            "job_id": context.id,
            "worker_id": self.worker_id,
            "queue": context.queue,
            "task": context.task,
        }


def default_worker_id() -> str:
    """`<host>:<pid>`, with what the API would refuse in a host name replaced."""
    host = re.sub(r"[^A-Za-z0-9_.@-]", "-", socket.gethostname())[:100] or "host"
    return f"{host}:{os.getpid()}"


def describe(exc: BaseException) -> str:
    """An exception as a job's error: its class, its message and where it was raised."""
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" (at {frames[-1].filename}:{frames[-1].lineno})" if frames else ""
    return f"{type(exc).__name__}: {exc}{where}"


def storable_text(text: str) -> str:
    """`text` without what Postgres or JSON parsers refuse: NUL and lone surrogates."""
    text = text.replace("\x00", "\\x00")
    return text.encode("utf-8", "surrogatepass").decode("utf-8", "replace")
