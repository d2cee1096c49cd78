"""The WorkerManager: spawns worker processes and keeps the fleet at its desired size.

It restarts a child that dies, kills a child whose job outlived its hard timeout, follows the
desired process count operators set through the API, and on SIGTERM or SIGINT stops the fleet
within the grace period. Each child builds its own connections. The first children are forked,
before the manager has a thread or a connection of its own, so that they claim without
importing everything again; every later child is spawned (docs/DECISIONS.md 93). The manager's
metrics port and duties start once those children have made their first claims (DECISIONS 96).

A burst run (`burst=True`) stops the same way once its queues have no work left
(`app/services/drain.py` says what that means), keeps the size it was started with, and exits
1 only on an error of its own: Postgres or Redis unreachable when it starts, or a worker process
that failed (exited with an error, rather than being killed). A job that fails is no such error.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import logging
import multiprocessing
import os
import signal
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from multiprocessing.context import ForkContext
from multiprocessing.process import BaseProcess
from typing import Any

import redis
from sqlalchemy.exc import DBAPIError

from app.logging import log_context
from app.metrics import mark_process_dead
from app.services import connections, drain, execution, fleet_state
from app.services.context import Context
from app.settings import Settings
from app.workers.process import WorkerSpec, run_worker_process

log = logging.getLogger(__name__)

TICK = 0.1
DESIRED_REFRESH = 0.5
HEALTHY_LIFETIME = 10.0  # a child that lived this long ends a crash loop
MAX_RESPAWN_DELAY = 30.0
# The longest the manager holds its metrics port and duties back for its first children's
# first claims (a child that cannot reach Postgres never makes one).
OWN_START_HOLD = 5.0


@dataclass
class Child:
    worker_id: str
    process: BaseProcess
    deadlines: Any  # shared array of time.time() deadlines, one per job loop; 0 = idle
    first_turn: Any  # shared flag: a job loop of the child has claimed, or found nothing ready
    started: float = field(default_factory=time.monotonic)
    retiring: bool = False
    killed_for_timeout: bool = False


class WorkerManager:
    def __init__(
        self,
        settings: Settings,
        host: str,
        processes: int,
        threads: int,
        queues: list[str],
        parent_pid: int | None = None,
        burst: bool = False,
    ) -> None:
        self.settings = settings
        self.host = host
        self.default_size = processes
        self.threads = threads
        self.queues = queues
        # Until the first children are started: one connection for what the manager reads
        # before them (a burst run's backlog, the desired size), closed before they are forked.
        self.ctx = Context(settings, pool=connections.manager_start())
        self.mp = multiprocessing.get_context("spawn")
        # Set only while the first children start: a fork is safe while this process has no
        # thread but its main one and no open connection.
        self.forking: ForkContext | None = None
        self.pid = os.getpid()
        self.children: list[Child] = []
        self.stop_requested = threading.Event()
        self.desired = processes
        self.spawned = 0
        self.quick_deaths = 0
        self.next_spawn_at = 0.0
        self.manager_id = f"{host}:manager:{os.getpid()}"
        # The process whose end should be ours: `dev` runs the fleet for as long as it runs,
        # whatever signal ends it (SIGKILL included). Compared with our parent pid each tick.
        self.parent = parent_pid
        self.burst = burst
        self.exit_code = 0

    # -- lifecycle -------------------------------------------------------------------------

    def run(self) -> int:
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._on_signal)
        with log_context(worker_id=self.manager_id):
            log.info(
                "fleet started",
                extra={
                    "action": "fleet_started",
                    "host": self.host,
                    "queues": self.queues,
                    "burst": self.burst,
                },
            )
            if self.burst and not self.has_work_at_start():
                self.ctx.close()
                return self.exit_code
            self.start_first_children()
            duties_stop = threading.Event()
            # The metrics port and the duties wait for the first children's first claims:
            # loading the duties' modules and starting their threads, each of which connects,
            # takes more CPU than a child needs to reach its first claim, and on two cores it
            # would be taken from the children. OWN_START_HOLD bounds the wait (a child that
            # cannot reach Postgres, say).
            own_start_at = time.monotonic() + OWN_START_HOLD
            own_started = False
            next_desired = next_beat = 0.0
            while not self.stop_requested.is_set():
                now = time.monotonic()
                if not own_started and (now >= own_start_at or self.first_children_started()):
                    own_started = True
                    self.start_own_services(duties_stop)
                if self.parent is not None and os.getppid() != self.parent:
                    log.warning("parent gone: stopping", extra={"action": "fleet_orphaned"})
                    break
                self.reap()
                if self.exit_code:
                    break
                self.enforce_hard_timeouts()
                if now >= next_desired and not self.burst:
                    self.desired = self.read_desired()
                    next_desired = now + DESIRED_REFRESH
                self.follow_desired()
                if now >= next_beat:
                    self.beat()
                    next_beat = now + self.settings.heartbeat_interval_seconds
                if self.burst and self.drained():
                    break
                self.stop_requested.wait(TICK)
            duties_stop.set()
            self.shutdown()
        return self.exit_code

    def start_first_children(self) -> None:
        """Start the children the fleet begins with, forked when that is safe, then build the
        manager's own connections. A fork starts a child in milliseconds where a spawn takes a
        new interpreter importing every module again (most of a second on two busy cores)."""
        if not self.burst:
            self.desired = self.read_desired()
        # Before any child's: whoever sees the fleet's workers sees their manager (the API
        # sizes only a fleet whose manager it sees).
        self.beat()
        self.ctx.close()
        # A manager run inside a process that has threads of its own (a test's) spawns them all.
        if threading.active_count() == 1:
            self.forking = multiprocessing.get_context("fork")
            # Out of every collection, here and in the children: a collection would touch, and
            # so copy, every page they share with this process. No full collection first
            # (app.runtime's): it costs a tenth of a second of the first claim's wait, and the
            # few hundred objects the imports left as garbage (collection being off meanwhile,
            # app/__main__.py) stay frozen instead, a few tens of kilobytes.
            gc.freeze()
        try:
            self.follow_desired()
        finally:
            self.forking = None
            # Off since the start when run by `python -m app worker` (app/__main__.py): the
            # imports' objects are frozen by now, and a forked child turns it on for itself
            # (app.runtime).
            gc.enable()
        self.ctx = Context(self.settings, pool=connections.manager(self.settings))

    def first_children_started(self) -> bool:
        """Whether every child has claimed its first jobs or found none ready."""
        return all(child.first_turn.value for child in self.children if not child.retiring)

    def start_own_services(self, duties_stop: threading.Event) -> None:
        """The fleet's metrics port and, unless RUN_DUTIES is off, the periodic duties."""
        self.serve_metrics()
        if self.settings.run_duties:
            # Imported here: no worker process needs the duties' modules.
            from app.services.maintenance import start_duties

            start_duties(self.ctx, self.manager_id, duties_stop)

    def _on_signal(self, signum: int, _: object) -> None:
        if os.getpid() != self.pid:
            # A forked child that has not yet set its own handlers: the signal's default, as a
            # spawned child would have it.
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        self.stop_requested.set()

    def shutdown(self) -> None:
        """Stop popping everywhere at once, let running jobs finish within the grace period."""
        log.info("fleet stopping", extra={"action": "fleet_stopping"})
        for child in self.children:
            self._terminate(child)
        deadline = time.monotonic() + self.settings.shutdown_grace_seconds
        while any(c.process.is_alive() for c in self.children) and time.monotonic() < deadline:
            time.sleep(TICK)
        for child in self.children:
            if child.process.is_alive():
                # Its jobs are left to recovery: never marked completed, re-run after the lease.
                log.warning(
                    "grace period over: killing worker",
                    extra={"action": "worker_killed", "child": child.worker_id},
                )
                child.process.kill()
            child.process.join(5)
            self._forget(child)
        self.children.clear()
        with contextlib.suppress(redis.RedisError):
            fleet_state.sign_off(self.ctx, self.manager_id)
        self.ctx.close()
        log.info("fleet stopped", extra={"action": "fleet_stopped"})

    # -- burst runs ------------------------------------------------------------------------

    def has_work_at_start(self) -> bool:
        """Whether a burst run has anything to do; with nothing, it exits before starting a
        process. Postgres or Redis unreachable here is an error: the run cannot tell."""
        try:
            backlog = drain.backlog(self.ctx, self.queues)
        except (DBAPIError, redis.RedisError) as exc:
            log.error(
                "burst run cannot read its queues",
                extra={"action": "burst_failed", "error": str(exc)},
            )
            self.exit_code = 1
            return False
        if backlog.drained:
            self._log_drained(backlog)
            return False
        return True

    def drained(self) -> bool:
        """True once no served queue has work left (a failed look counts as work left: the
        fleet rides out an outage as it does without --burst)."""
        try:
            backlog = drain.backlog(self.ctx, self.queues)
        except (DBAPIError, redis.RedisError) as exc:
            log.warning("burst run could not read its queues", extra={"error": str(exc)})
            return False
        if backlog.drained:
            self._log_drained(backlog)
        return backlog.drained

    def _log_drained(self, backlog: drain.Backlog) -> None:
        log.info(
            "queues drained: burst run ends",
            extra={"action": "burst_drained", "paused_queues": backlog.paused},
        )

    # -- duties of each tick ---------------------------------------------------------------

    def reap(self) -> None:
        """Notice children that exited; release what a dead one held."""
        for child in list(self.children):
            if child.process.is_alive():
                continue
            child.process.join()
            self.children.remove(child)
            clean = child.retiring and child.process.exitcode == 0
            if self.burst and (child.process.exitcode or 0) > 0:
                # It failed by itself (its task modules would not import, say): every
                # replacement would too, and the run would never end.
                log.error(
                    "worker failed: burst run ends",
                    extra={
                        "action": "burst_failed",
                        "child": child.worker_id,
                        "exitcode": child.process.exitcode,
                    },
                )
                self.exit_code = 1
            if not clean:
                lived = time.monotonic() - child.started
                log.warning(
                    "worker died",
                    extra={
                        "action": "worker_died",
                        "child": child.worker_id,
                        "exitcode": child.process.exitcode,
                        "lived_seconds": round(lived, 2),
                    },
                )
                self._note_death(lived)
            self._release(child)
            self._forget(child)
            if child.process.pid is not None:
                mark_process_dead(child.process.pid)

    def enforce_hard_timeouts(self) -> None:
        """Kill a child whose job is still running past its timeout plus the grace."""
        now = time.time()
        for child in self.children:
            if child.killed_for_timeout or not child.process.is_alive():
                continue
            deadlines = list(child.deadlines[:])
            if any(d > 0 and now > d + self.settings.hard_timeout_grace_seconds for d in deadlines):
                log.warning(
                    "job past its hard timeout: killing its worker",
                    extra={"action": "worker_killed_for_timeout", "child": child.worker_id},
                )
                child.killed_for_timeout = True
                child.process.kill()

    def read_desired(self) -> int:
        try:
            desired = fleet_state.desired_size(self.ctx, self.host)
        except redis.RedisError:
            return self.desired
        return self.default_size if desired is None else desired

    def follow_desired(self) -> None:
        active = [c for c in self.children if not c.retiring]
        if len(active) > self.desired:
            # Retire the newest first: they are the least likely to be in the middle of a job.
            for child in sorted(active, key=lambda c: c.started)[self.desired :]:
                log.info(
                    "retiring worker", extra={"action": "worker_retiring", "child": child.worker_id}
                )
                self._terminate(child)
            return
        if self.quick_deaths and any(
            time.monotonic() - c.started > HEALTHY_LIFETIME for c in active
        ):
            self.quick_deaths = 0
        while len(active) < self.desired and time.monotonic() >= self.next_spawn_at:
            active.append(self.spawn())
            if self.quick_deaths:
                break  # in a crash loop, one at a time

    def beat(self) -> None:
        state = {
            "kind": "manager",
            "worker_id": self.manager_id,
            "host": self.host,
            "pid": os.getpid(),
            "queues": self.queues,
            "desired": self.desired,
            "processes": len([c for c in self.children if not c.retiring]),
            "state": "running",
            "seen_at": datetime.now(UTC).isoformat(),
        }
        try:
            fleet_state.beat(self.ctx, self.manager_id, state, self.settings.heartbeat_ttl_seconds)
        except redis.RedisError as exc:
            log.warning("manager heartbeat failed", extra={"error": str(exc)})

    def serve_metrics(self) -> None:
        """The fleet's job metrics (every child's, merged) on a port of the manager's own."""
        port = self.settings.fleet_metrics_port
        if not port:
            return
        from prometheus_client import CollectorRegistry, start_http_server
        from prometheus_client.multiprocess import MultiProcessCollector

        registry = CollectorRegistry()
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        try:
            start_http_server(port, addr=self.settings.fleet_metrics_host, registry=registry)
        except OSError as exc:
            log.warning("fleet metrics port unavailable", extra={"port": port, "error": str(exc)})

    # -- helpers ---------------------------------------------------------------------------

    def spawn(self) -> Child:
        self.spawned += 1
        worker_id = f"{self.host}:{os.getpid()}:{self.spawned}"
        mp = self.forking or self.mp
        deadlines = mp.Array(ctypes.c_double, self.threads, lock=False)
        first_turn = mp.Value(ctypes.c_bool, False, lock=False)
        spec = WorkerSpec(
            self.settings, worker_id, self.host, self.queues, self.threads, os.getpid()
        )
        process = mp.Process(
            target=run_worker_process,
            args=(spec, deadlines, first_turn),
            name=worker_id,
            daemon=False,
        )
        process.start()
        child = Child(worker_id, process, deadlines, first_turn)
        self.children.append(child)
        log.info("worker spawned", extra={"action": "worker_spawned", "child": worker_id})
        return child

    def _terminate(self, child: Child) -> None:
        child.retiring = True
        if child.process.is_alive() and child.process.pid is not None:
            os.kill(child.process.pid, signal.SIGTERM)

    def _note_death(self, lived: float) -> None:
        """Back off respawning while children keep dying young, instead of spinning."""
        if lived < HEALTHY_LIFETIME:
            self.quick_deaths += 1
            delay = min(MAX_RESPAWN_DELAY, 0.25 * 2 ** (self.quick_deaths - 1))
            self.next_spawn_at = time.monotonic() + delay

    def _release(self, child: Child) -> None:
        try:
            execution.release_dead_worker(self.ctx, child.worker_id)
        except (DBAPIError, redis.RedisError) as exc:
            # Recovery finds these jobs later through their expired leases.
            log.warning("could not release jobs of a dead worker", extra={"error": str(exc)})

    def _forget(self, child: Child) -> None:
        with contextlib.suppress(redis.RedisError):
            fleet_state.sign_off(self.ctx, child.worker_id)
