"""One job loop (a thread of a worker process): pop, claim, run, finish. Each step is a
function of its own that a test can call.

A turn takes up to `prefetch` ids from one ready list (the highest priority with work, the
tenant whose turn it is), claims them in one UPDATE, runs them one after another and records
their successes in one transaction. When nothing is ready, the loop blocks on its queues'
bells until a push rings one. `prefetch` doubles while the list fills each request and shrinks
to what it got otherwise, and it never holds more than about BATCH_BUDGET seconds of work
(judged by the loop's recent run times), so a lone job is never delayed and a loop never sits
on work that idle loops could run.

The loop reads time from a `Clock` it is given (waiting successes, the give-up deadline of a
recording step, the average run time), so a test moves time instead of sleeping. A job's
deadline is the time of day instead: the process's watchdog and the manager read it too.
"""

from __future__ import annotations

import logging
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import redis
from sqlalchemy.exc import DBAPIError

from app.domain.records import Claimed
from app.domain.states import AttemptOutcome
from app.logging import log_context
from app.services import execution, taking
from app.services.context import Context
from app.services.taking import Taken
from app.workers.clock import Clock, SystemClock
from app.workers.registry import JobContext, NonRetryable, TaskRegistry, UnknownTask
from app.workers.timeouts import SoftTimeout

log = logging.getLogger(__name__)

POP_TIMEOUT = 1.0  # how long a wait blocks before the loop looks at stop and pause again
BACKOFF_ON_ERROR = 1.0
FINISH_RETRY = 0.25
BATCH_BUDGET = 0.05  # seconds of work one loop may hold claimed beyond the job it runs
FLUSH_AFTER = 0.02  # successes wait at most this long to be recorded together
RUN_TIME_WEIGHT = 0.2  # of the newest run in the moving average of run times


@dataclass
class Outcome:
    result_json: str | None = None
    error: str | None = None
    kind: AttemptOutcome = AttemptOutcome.COMPLETED
    retryable: bool = True  # False: the same code would fail the same way again


@dataclass
class Slot:
    """What one loop is doing, shared with the process's watchdog and heartbeat."""

    index: int
    lock: threading.Lock = field(default_factory=threading.Lock)
    job: Claimed | None = None
    held: tuple[Claimed, ...] = ()  # claimed and not yet finished, the running one included
    context: JobContext | None = None
    in_task: bool = False
    timed_out: bool = False
    thread_ident: int = 0


@dataclass
class Counters:
    processed: int = 0
    failed: int = 0
    skipped: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, **deltas: int) -> None:
        with self.lock:
            for name, delta in deltas.items():
                setattr(self, name, getattr(self, name) + delta)


class JobLoop:
    def __init__(
        self,
        ctx: Context,
        worker_id: str,
        queues: list[str],
        tasks: TaskRegistry,
        slot: Slot,
        counters: Counters,
        stopping: threading.Event,
        paused: set[str],
        on_deadline: Any = None,
        clock: Clock | None = None,
        on_started: Callable[[], None] | None = None,
    ) -> None:
        self.ctx = ctx
        self.worker_id = worker_id
        self.queues = queues
        self.tasks = tasks
        self.slot = slot
        self.counters = counters
        self.stopping = stopping
        self.paused = paused  # replaced wholesale by the process, never mutated in place
        self.applied_paused: set[str] = paused  # what the current pop honours
        self.on_deadline = on_deadline or (lambda index, deadline: None)
        self.clock = clock or SystemClock()
        # Called once, when the loop has claimed its first jobs or found none ready: its
        # process's manager holds its own start-up work back until then (manager.py).
        self.on_started = on_started
        self.prefetch_max = max(1, ctx.settings.worker_prefetch)
        self.prefetch = 1
        self.average_run = 0.0
        self.pending: list[tuple[Claimed, str]] = []
        self.pending_since = 0.0

    def run(self) -> None:
        self.slot.thread_ident = threading.get_ident()
        while not self.stopping.is_set():
            try:
                self.step()
            except (redis.RedisError, DBAPIError) as exc:
                # Redis or Postgres is away: wait, then try again; nothing is held.
                log.warning("worker loop error", extra={"error": str(exc)})
                self.stopping.wait(BACKOFF_ON_ERROR)

    def step(self) -> int:
        """One turn: take ids, claim them, run them, finish them. Returns how many ran."""
        taken = self.take()
        if taken is None:
            return 0
        batch = self.claim(taken)
        self.started()
        ran = 0
        try:
            for job in batch:
                if self.stopping.is_set():
                    break
                with log_context(
                    job_id=str(job.id), worker_id=self.worker_id, queue=job.queue, task=job.task
                ):
                    outcome = self.execute(job)
                    # Started is started: whatever happens while recording it, this job is
                    # never handed back as unstarted (it would run twice on one attempt).
                    ran += 1
                    self.settle(job, outcome)
        finally:
            self.flush()
            self.release(batch[ran:])
        return ran

    def take(self) -> Taken | None:
        """Ready ids of the served queues that are not paused: at once if any are waiting,
        else after a push rings a bell within POP_TIMEOUT; None when none came."""
        self.applied_paused = paused = self.paused
        served = [q for q in self.queues if q not in paused]
        if not served:
            self.stopping.wait(POP_TIMEOUT / 2)
            return None
        count = self.batch_size()
        taken = taking.take(self.ctx, served, count)
        if taken is None:
            self.started()  # nothing to claim: no reason to hold anything back for us
            woken = taking.wait(self.ctx, served, POP_TIMEOUT, self.worker_id)
            if not woken or self.stopping.is_set():
                return None
            taken = taking.take(self.ctx, served, count)
            if taken is None:
                return None
        # The list filled the whole request: ask for more next time; else for what it had.
        got = len(taken.job_ids)
        self.prefetch = min(self.prefetch_limit(), count * 2) if got == count else got
        if self.stopping.is_set():
            # Stop was asked meanwhile: hand the ids back rather than start jobs.
            taking.hand_back(self.ctx, taken)
            return None
        return taken

    def started(self) -> None:
        if self.on_started is not None:
            on_started, self.on_started = self.on_started, None
            on_started()

    def prefetch_limit(self) -> int:
        """At most WORKER_PREFETCH ids, and no more than BATCH_BUDGET seconds of work."""
        if self.average_run > 0:
            return max(1, min(self.prefetch_max, int(BATCH_BUDGET / self.average_run)))
        return self.prefetch_max

    def batch_size(self) -> int:
        self.prefetch = max(1, min(self.prefetch, self.prefetch_limit()))
        return self.prefetch

    def claim(self, taken: Taken) -> list[Claimed]:
        try:
            claimed = execution.claim(self.ctx, taken.job_ids, self.worker_id)
        except DBAPIError:
            # Postgres is away: the ids go back where they were rather than wait for the sweep.
            taking.hand_back(self.ctx, taken)
            raise
        if len(claimed) < len(taken.job_ids):
            # Stale (cancelled, deleted, already run) or duplicate ids: harmless, counted.
            self.counters.add(skipped=len(taken.job_ids) - len(claimed))
        with self.slot.lock:
            self.slot.held = tuple(claimed)
        return claimed

    def execute(self, job: Claimed) -> Outcome:
        try:
            task = self.tasks.get(job.task)
        except UnknownTask as exc:
            return Outcome(error=str(exc), kind=AttemptOutcome.FAILED, retryable=False)
        deadline = time.time() + job.timeout_seconds
        context = JobContext(job.id, job.queue, job.attempt, job.max_retries, deadline)
        with self.slot.lock:
            self.slot.job, self.slot.context = job, context
            self.slot.in_task, self.slot.timed_out = True, False
        self.on_deadline(self.slot.index, deadline)
        began = self.clock.now()
        try:
            try:
                result = task(job.payload, context)
            finally:
                with self.slot.lock:
                    self.slot.in_task = False
                run_time = self.clock.now() - began
                self.average_run += RUN_TIME_WEIGHT * (run_time - self.average_run)
            return Outcome(result_json=execution.encode_result(result))
        except execution.ResultNotSerialisable as exc:
            return Outcome(error=str(exc), kind=AttemptOutcome.FAILED, retryable=False)
        except NonRetryable as exc:
            return Outcome(error=_describe(exc), kind=AttemptOutcome.FAILED, retryable=False)
        except SoftTimeout:
            return Outcome(
                error=f"timeout: ran past {job.timeout_seconds} s", kind=AttemptOutcome.TIMEOUT
            )
        except Exception as exc:  # noqa: BLE001 - any error of a task is the job's failure
            return Outcome(error=_describe(exc), kind=AttemptOutcome.FAILED)
        finally:
            self.on_deadline(self.slot.index, 0.0)

    def settle(self, job: Claimed, outcome: Outcome) -> None:
        """A success waits (briefly) to be recorded with others; a failure is recorded now."""
        with self.slot.lock:
            self.slot.job, self.slot.context = None, None
        if outcome.kind is AttemptOutcome.COMPLETED:
            assert outcome.result_json is not None
            if not self.pending:
                self.pending_since = self.clock.now()
            self.pending.append((job, outcome.result_json))
            if self.clock.now() - self.pending_since >= FLUSH_AFTER:
                self.flush()
            return
        self._retrying(
            lambda: execution.fail(
                self.ctx, job.lease, outcome.error or "failed", outcome.kind, outcome.retryable
            )
        )
        self._forget([job])
        self.counters.add(processed=1, failed=1)

    def flush(self) -> None:
        """Record the waiting successes in one transaction."""
        if not self.pending:
            return
        done, self.pending = self.pending, []
        self._retrying(
            lambda: execution.complete_many(self.ctx, [(job.lease, result) for job, result in done])
        )
        self._forget([job for job, _ in done])
        self.counters.add(processed=len(done))

    def release(self, unstarted: list[Claimed]) -> None:
        """Claimed jobs this loop will not run (it is stopping): back to their queue, with
        their attempt count as it was before the claim."""
        if unstarted:
            execution.unclaim(self.ctx, [job.lease for job in unstarted])
            self._forget(unstarted)

    def _forget(self, jobs: list[Claimed]) -> None:
        finished = {job.id for job in jobs}
        with self.slot.lock:
            self.slot.held = tuple(job for job in self.slot.held if job.id not in finished)

    def _retrying(self, record: Callable[[], object]) -> None:
        """Run a recording step, retrying while Postgres is away for as long as the leases
        could still be current; after that, recovery owns the jobs and a late finish would be
        refused anyway."""
        give_up_at = self.clock.now() + execution.lease_seconds(self.ctx)
        while True:
            try:
                record()
                return
            except DBAPIError as exc:
                if self.clock.now() >= give_up_at:
                    raise
                log.warning("finish failed, retrying", extra={"error": str(exc.orig)})
                self.clock.sleep(FINISH_RETRY)


def _describe(exc: BaseException) -> str:
    last = traceback.extract_tb(exc.__traceback__)[-1:] if exc.__traceback__ else []
    where = f" (at {last[0].filename}:{last[0].lineno})" if last else ""
    return f"{type(exc).__name__}: {exc}{where}"
