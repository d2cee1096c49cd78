"""One job loop (a thread of a worker process): pop, claim, run, finish. Each step is a
function of its own that a test can call."""

from __future__ import annotations

import logging
import threading
import time
import traceback
from dataclasses import dataclass, field
from typing import Any

import redis
from sqlalchemy.exc import DBAPIError

from app.dispatch import pop as dispatch_pop
from app.domain.states import AttemptOutcome
from app.logging import log_context
from app.services import execution
from app.services.context import Context
from app.store.claims import Claimed
from app.workers.registry import JobContext, TaskRegistry, UnknownTask
from app.workers.timeouts import SoftTimeout

log = logging.getLogger(__name__)

POP_TIMEOUT = 1.0  # how long a pop blocks before the loop looks at stop and pause again
BACKOFF_ON_ERROR = 1.0
FINISH_RETRY = 0.25


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

    def run(self) -> None:
        self.slot.thread_ident = threading.get_ident()
        while not self.stopping.is_set():
            try:
                self.step()
            except (redis.RedisError, DBAPIError) as exc:
                # Redis or Postgres is away: wait, then try again; nothing is held.
                log.warning("worker loop error", extra={"error": str(exc)})
                self.stopping.wait(BACKOFF_ON_ERROR)

    def step(self) -> bool:
        """One turn: pop an id, claim it, run it, finish it. True when a job ran."""
        popped = self.pop()
        if popped is None:
            return False
        job = self.claim(popped)
        if job is None:
            return False
        with log_context(
            job_id=str(job.id), worker_id=self.worker_id, queue=job.queue, task=job.task
        ):
            outcome = self.execute(job)
            self.finish(job, outcome)
        return True

    def pop(self) -> tuple[str, str] | None:
        self.applied_paused = paused = self.paused
        served = [q for q in self.queues if q not in paused]
        if not served:
            self.stopping.wait(POP_TIMEOUT / 2)
            return None
        lists = dispatch_pop.ready_lists(self.ctx.keys, served)
        popped = dispatch_pop.pop(self.ctx.redis.client, lists, POP_TIMEOUT)
        if popped is not None and self.stopping.is_set():
            # Stop was asked while we waited: hand the id back rather than start a job.
            dispatch_pop.push_back(self.ctx.redis.client, popped[0], popped[1])
            return None
        return popped

    def claim(self, popped: tuple[str, str]) -> Claimed | None:
        claimed = execution.claim(self.ctx, [popped[1]], self.worker_id)
        if not claimed:
            # Stale (cancelled, deleted, already run) or a duplicate id: harmless, counted.
            self.counters.add(skipped=1)
            return None
        return claimed[0]

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
        try:
            try:
                result = task(job.payload, context)
            finally:
                with self.slot.lock:
                    self.slot.in_task = False
            return Outcome(result_json=execution.encode_result(result))
        except execution.ResultNotSerialisable as exc:
            return Outcome(error=str(exc), kind=AttemptOutcome.FAILED, retryable=False)
        except SoftTimeout:
            return Outcome(
                error=f"timeout: ran past {job.timeout_seconds} s", kind=AttemptOutcome.TIMEOUT
            )
        except Exception as exc:  # noqa: BLE001 - any error of a task is the job's failure
            return Outcome(error=_describe(exc), kind=AttemptOutcome.FAILED)
        finally:
            self.on_deadline(self.slot.index, 0.0)

    def finish(self, job: Claimed, outcome: Outcome) -> None:
        """Record the outcome, retrying while Postgres is away for as long as the lease could
        still be current; after that, recovery owns the job and a late finish would be
        refused anyway."""
        give_up_at = time.monotonic() + execution.lease_seconds(self.ctx)
        while True:
            try:
                self._record(job, outcome)
                return
            except DBAPIError as exc:
                if time.monotonic() >= give_up_at:
                    raise
                log.warning("finish failed, retrying", extra={"error": str(exc.orig)})
                time.sleep(FINISH_RETRY)

    def _record(self, job: Claimed, outcome: Outcome) -> None:
        try:
            if outcome.kind is AttemptOutcome.COMPLETED:
                assert outcome.result_json is not None
                execution.complete(self.ctx, job.lease, outcome.result_json)
                self.counters.add(processed=1)
            else:
                execution.fail(
                    self.ctx, job.lease, outcome.error or "failed", outcome.kind, outcome.retryable
                )
                self.counters.add(processed=1, failed=1)
        finally:
            with self.slot.lock:
                self.slot.job, self.slot.context = None, None


def _describe(exc: BaseException) -> str:
    last = traceback.extract_tb(exc.__traceback__)[-1:] if exc.__traceback__ else []
    where = f" (at {last[0].filename}:{last[0].lineno})" if last else ""
    return f"{type(exc).__name__}: {exc}{where}"
