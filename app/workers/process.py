"""A worker process: T job loops (threads), plus its main thread acting as heartbeat and
watchdog. Everything that talks to Postgres or Redis is built here, after the spawn."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import redis
from sqlalchemy.exc import DBAPIError

from app.logging import configure_logging, log_context
from app.runtime import freeze_startup_objects
from app.services import connections, execution, fleet_state, taking
from app.services.context import Context
from app.settings import Settings
from app.workers.loop import Counters, JobLoop, Slot
from app.workers.registry import load_task_modules
from app.workers.timeouts import SoftTimeout, raise_in_thread

log = logging.getLogger(__name__)

WATCHDOG_TICK = 0.05
PAUSED_REFRESH = 0.5


@dataclass(frozen=True)
class WorkerSpec:
    """The recipe a manager hands a child: picklable, holds no connection."""

    settings: Settings
    worker_id: str
    host: str
    queues: list[str]
    threads: int
    # Its manager: when our parent is another process, the manager is gone (even one killed
    # before this child got as far as asking who its parent is).
    manager_pid: int


class WorkerProcess:
    def __init__(self, spec: WorkerSpec, deadlines: Any, first_turn: Any = None) -> None:
        self.spec = spec
        self.ctx = Context(spec.settings, pool=connections.worker(spec.threads))
        self.deadlines = deadlines  # shared array: the manager kills us past deadline + grace
        # Shared flag, set once a job loop has made its first claim or found nothing ready:
        # the manager starts its duties after that, so as not to slow the claim down.
        self.first_turn = first_turn
        self.stopping = threading.Event()
        self.counters = Counters()
        self.slots = [Slot(i) for i in range(spec.threads)]
        self.started_at = datetime.now(UTC).isoformat()
        self.loops: list[JobLoop] = []

    def set_deadline(self, index: int, deadline: float) -> None:
        self.deadlines[index] = deadline

    def set_started(self) -> None:
        if self.first_turn is not None:
            self.first_turn.value = True

    def run(self) -> int:
        signal.signal(signal.SIGTERM, lambda *_: self.stopping.set())
        # Ctrl-C reaches the whole process group; the manager alone decides what it means.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        tasks = load_task_modules(self.spec.settings)
        threads = []
        for slot in self.slots:
            loop = JobLoop(
                self.ctx,
                self.spec.worker_id,
                self.spec.queues,
                tasks,
                slot,
                self.counters,
                self.stopping,
                paused=set(),
                on_deadline=self.set_deadline,
                on_started=self.set_started,
            )
            self.loops.append(loop)
            thread = threading.Thread(target=loop.run, name=f"job-loop-{slot.index}", daemon=True)
            threads.append(thread)
        with log_context(worker_id=self.spec.worker_id):
            log.info("worker started", extra={"action": "worker_started"})
            self._refresh_paused()
            self._beat()  # before any claim, so recovery never sees a job of an unknown worker
            freeze_startup_objects()
            for thread in threads:
                thread.start()
            self._supervise(threads)
            self._goodbye()
        return 0

    def _supervise(self, threads: list[threading.Thread]) -> None:
        next_beat = 0.0
        next_paused = 0.0
        woken = False
        while any(thread.is_alive() for thread in threads):
            now = time.monotonic()
            if os.getppid() != self.spec.manager_pid and not self.stopping.is_set():
                # The manager is gone (killed): nobody would supervise us; finish and leave.
                log.warning("manager gone: stopping", extra={"action": "worker_orphaned"})
                self.stopping.set()
            if self.stopping.is_set() and not woken:
                woken = True
                self._wake_idle_loops()
            self._enforce_soft_timeouts()
            if now >= next_beat:
                self._beat()
                next_beat = now + self.spec.settings.heartbeat_interval_seconds
            if now >= next_paused and not self.stopping.is_set():
                self._refresh_paused()
                next_paused = now + PAUSED_REFRESH
            time.sleep(WATCHDOG_TICK)

    def _wake_idle_loops(self) -> None:
        """Loops waiting for work stop now rather than at the end of their wait."""
        with contextlib.suppress(redis.RedisError):  # else they stop within POP_TIMEOUT
            taking.wake(self.ctx, self.spec.worker_id, len(self.slots))

    def _enforce_soft_timeouts(self) -> None:
        now = time.time()
        for slot in self.slots:
            with slot.lock:
                if (
                    slot.in_task
                    and not slot.timed_out
                    and slot.context is not None
                    and now >= slot.context.deadline
                ):
                    slot.timed_out = raise_in_thread(slot.thread_ident, SoftTimeout)

    def _refresh_paused(self) -> None:
        try:
            paused = fleet_state.paused_queues(self.ctx)
        except redis.RedisError:
            return
        for loop in self.loops:
            loop.paused = paused

    def _running(self) -> list[tuple[uuid.UUID, uuid.UUID]]:
        """Every job this process holds a lease on (job id, lease token): running, or claimed
        and waiting its turn."""
        running: list[tuple[uuid.UUID, uuid.UUID]] = []
        for slot in self.slots:
            with slot.lock:
                running.extend((job.id, job.lease_token) for job in slot.held)
        return running

    def _beat(self) -> None:
        running = self._running()
        state = {
            "kind": "worker",
            "worker_id": self.spec.worker_id,
            "host": self.spec.host,
            "pid": os.getpid(),
            "queues": self.spec.queues,
            "threads": self.spec.threads,
            "state": "stopping" if self.stopping.is_set() else ("busy" if running else "idle"),
            "current_jobs": [str(job_id) for job_id, _ in running],
            # Paused as far as every loop's current pop is concerned, not merely requested.
            "paused_queues": sorted(set.intersection(*(lp.applied_paused for lp in self.loops)))
            if self.loops
            else [],
            "processed": self.counters.processed,
            "failed": self.counters.failed,
            "skipped": self.counters.skipped,
            "started_at": self.started_at,
            "seen_at": datetime.now(UTC).isoformat(),
        }
        try:
            fleet_state.beat(
                self.ctx, self.spec.worker_id, state, self.spec.settings.heartbeat_ttl_seconds
            )
        except redis.RedisError as exc:
            log.warning("heartbeat failed", extra={"error": str(exc)})
        try:
            held = execution.renew_leases(self.ctx, running)
        except DBAPIError as exc:
            log.warning("lease renewal failed", extra={"error": str(exc)})
            return
        for slot in self.slots:
            with slot.lock:
                if slot.job is not None and slot.context is not None and held.get(slot.job.id):
                    slot.context.cancel_event.set()

    def _goodbye(self) -> None:
        with contextlib.suppress(redis.RedisError):  # else the key expires by itself
            fleet_state.sign_off(self.ctx, self.spec.worker_id)
        log.info("worker stopped", extra={"action": "worker_stopped"})
        self.ctx.close()


def run_worker_process(spec: WorkerSpec, deadlines: Any, first_turn: Any = None) -> None:
    """The entry point of a child, forked or spawned."""
    configure_logging(spec.settings.log_level)
    # A forked child starts inside its manager's log context: every line of its own names it.
    with log_context(worker_id=spec.worker_id):
        raise SystemExit(WorkerProcess(spec, deadlines, first_turn).run())


def default_host(settings: Settings) -> str:
    return settings.fleet_host or socket.gethostname()
