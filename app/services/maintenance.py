"""The periodic duties that keep the invariants true: promoter, recovery, reconciler,
retention; the stats duty, which counts finished jobs per minute for the overview; the bulk
duty, which advances bulk operations; and the schedules duty, which fires due schedules. Each
is `run_once(now)` (tests call it) plus a thin loop, `DutyRunner`, that runs it under a Redis
lock so one runner at a time does each duty across every host. Beside them runs the listener
(app/services/listening.py), which pushes the jobs enqueued in applications' own transactions,
under a lock of its own."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Protocol

import redis
from sqlalchemy.exc import DBAPIError

from app.dispatch import delayed, fleet, locks, ready, reconcile
from app.dispatch.ready import Place
from app.domain.states import TERMINAL, JobStatus
from app.logging import log_context
from app.services import bulk, connections, execution, schedules
from app.services.context import Context
from app.services.listening import Listener
from app.store import audit as audit_store
from app.store import bulk as bulk_store
from app.store import claims
from app.store import jobs as job_store
from app.store import maintenance as store
from app.store import stats as stats_store

log = logging.getLogger(__name__)

BATCH = 1000
RETENTION_ROUNDS = 50
# Batches of bulk operations per round of the bulk duty: with BULK_BATCH_SIZE 500, 10,000 jobs.
BULK_BATCHES = 20
REBUILD_BATCH = 5000
HEAD_SAMPLE = 10
# A promoted or requeued job is pushed moments after its run_at; this much slack keeps the
# sweep from mistaking that moment for a lost id.
SWEEP_SLACK = timedelta(seconds=5)


class Duty(Protocol):
    """A periodic duty. One may also say how long its runner's lock lasts (`lock_seconds`);
    by default four intervals, and at least 30 s (see DutyRunner)."""

    name: str
    interval: float

    def run_once(self, now: float) -> int:
        """Do one round; return how many jobs it touched."""
        ...


@dataclass
class Promoter:
    """Due scheduled jobs: scheduled -> queued in Postgres first, then the atomic move of
    their ids from the delayed set to their ready lists."""

    ctx: Context
    name: str = "promoter"
    interval: float = 0.25

    def run_once(self, now: float) -> int:
        with self.ctx.db.transaction() as session:
            due = store.promote_due(session, BATCH)
        moved = delayed.move_to_ready(
            self.ctx.redis.client,
            self.ctx.keys,
            [(str(j.id), Place(j.queue, j.priority, j.tenant)) for j in due],
        )
        self._forget_stale(now)
        return moved

    def _forget_stale(self, now: float) -> None:
        """Drop ids of the delayed set that are due but no longer scheduled (cancelled,
        deleted), so the set holds only live work."""
        client = self.ctx.redis.client
        due = delayed.due_ids(client, self.ctx.keys, now, BATCH)
        if not due:
            return
        with self.ctx.db.transaction() as session:
            stale = store.stale_scheduled(session, [uuid.UUID(i) for i in due])
        delayed.forget(client, self.ctx.keys, [str(i) for i in stale])


@dataclass
class Recovery:
    """Running jobs whose worker is gone go through the retry policy as lost attempts:
    those whose lease expired, and native-fleet jobs whose worker's heartbeat key vanished
    and whose lease has not been renewed for two heartbeat intervals."""

    ctx: Context
    name: str = "recovery"
    interval: float = 1.0

    def run_once(self, now: float) -> int:
        settings = self.ctx.settings
        with self.ctx.db.transaction() as session:
            expired = claims.expired_leases(session, BATCH)
            quiet = claims.unrenewed_leases(
                session,
                silent_seconds=2 * settings.heartbeat_interval_seconds,
                lease_seconds=execution.lease_seconds(self.ctx),
                limit=BATCH,
            )
        recovered = sum(1 for held in expired if execution.recover(self.ctx, held, "lease expired"))
        expired_ids = {held.lease.id for held in expired}
        client, keys = self.ctx.redis.client, self.ctx.keys
        for held, worker_id in quiet:
            if held.lease.id in expired_ids or fleet.heartbeat_alive(client, keys, worker_id):
                continue
            if execution.recover(self.ctx, held, f"heartbeat of {worker_id} gone"):
                recovered += 1
        return recovered


@dataclass
class Reconciler:
    """Rebuilds Redis from Postgres when Redis lost its data (no epoch key), and sweeps for
    queued jobs whose ids are missing from Redis (an API that died between commit and push, a
    worker that died between pop and claim)."""

    ctx: Context
    name: str = "reconciler"
    interval: float = 1.0
    last_sweep: float = 0.0

    def run_once(self, now: float) -> int:
        client, keys = self.ctx.redis.client, self.ctx.keys
        if not reconcile.epoch_present(client, keys):
            return self.rebuild()
        if now - self.last_sweep >= self.ctx.settings.sweep_after_seconds / 3:
            self.last_sweep = now
            return self.sweep()
        self.tidy()
        return 0

    def tidy(self) -> None:
        """List the ready lists, as a sweep does, on the rounds between sweeps: the walk
        marks the dead index entries ahead of each list's oldest queued job, and the next
        submit into a page full of marked entries reclaims them, so the index of queued jobs
        keeps to the size of the backlog while VACUUM lags (it grows with every job otherwise,
        its dead entries walked by every sweep). One index probe per list."""
        with self.ctx.db.transaction() as session:
            store.lists_with_queued_jobs(session)

    def rebuild(self) -> int:
        """Push every queued id in dispatch order and re-add every scheduled one. Ids still in
        Redis get a duplicate, which the claim makes harmless."""
        client, keys = self.ctx.redis.client, self.ctx.keys
        ready.forget_legacy_lists(client, keys)
        pushed = 0
        with self.ctx.db.transaction() as session:
            for batch in store.iter_queued(session, REBUILD_BATCH):
                lists: dict[Place, list[str]] = {}
                for job in batch:
                    place = Place(job.queue, job.priority, job.tenant)
                    lists.setdefault(place, []).append(str(job.id))
                ready.push_many(client, keys, lists.items())
                pushed += len(batch)
            for scheduled in store.iter_scheduled(session, REBUILD_BATCH):
                delayed.schedule(client, keys, [(str(i), at) for i, at in scheduled])
                pushed += len(scheduled)
        reconcile.write_epoch(client, keys, str(uuid.uuid4()))
        log.warning(
            "redis rebuilt from postgres", extra={"action": "redis_rebuilt", "count": pushed}
        )
        return pushed

    def sweep(self) -> int:
        """For each ready list (queue, tenant, priority) with queued jobs: a queued job that
        became ready before the oldest id at the list's head cannot be in the list (lists are
        FIFO), so its id was lost. Cost: a few ids and one index probe per list, whatever the
        depth of the queue."""
        client, keys = self.ctx.redis.client, self.ctx.keys
        pushed = 0
        with self.ctx.db.transaction() as session:
            now = job_store.database_now(session)
            cutoff = now - timedelta(seconds=self.ctx.settings.sweep_after_seconds)
            for where in store.lists_with_queued_jobs(session):
                place = Place(where.queue, where.priority, where.tenant)
                head = [uuid.UUID(i) for i in ready.head(client, keys, place, HEAD_SAMPLE)]
                oldest = store.oldest_queued_run_at(session, head)
                before = min(cutoff, oldest - SWEEP_SLACK) if oldest else cutoff
                lost = store.queued_before(session, where, before, BATCH)
                if lost:
                    ready.push(client, keys, place, [str(i) for i in lost], front=True)
                    pushed += len(lost)
        if pushed:
            log.warning(
                "queued jobs missing from redis pushed again",
                extra={"action": "jobs_reswept", "count": pushed},
            )
        return pushed


@dataclass
class Retention:
    """Deletes completed and cancelled jobs after RETENTION_SECONDS, failed ones (the
    dead-letter queue) after DLQ_RETENTION_SECONDS, the per-minute counts of the stats duty
    after STATS_RETENTION_SECONDS, audit events after AUDIT_RETENTION_SECONDS and finished bulk
    operations after RETENTION_SECONDS, in bounded batches."""

    ctx: Context
    name: str = "retention"
    interval: float = 60.0

    def run_once(self, now: float) -> int:
        """Batches of BATCH, one transaction each, until caught up or RETENTION_ROUNDS: a
        round keeps up with many thousand jobs a minute without one long transaction.
        Returns the jobs deleted."""
        settings = self.ctx.settings
        deleted = 0
        for statuses, age in (
            (TERMINAL - {JobStatus.FAILED}, settings.retention_seconds),
            ({JobStatus.FAILED}, settings.dlq_retention_seconds),
        ):
            deleted += self._in_batches(
                partial(store.delete_finished, statuses=statuses, older_than_seconds=age)
            )
        stats_age = settings.stats_retention_seconds
        self._in_batches(partial(stats_store.delete_old, older_than_seconds=stats_age))
        audit_age = settings.audit_retention_seconds
        self._in_batches(partial(audit_store.delete_older_than, older_than_seconds=audit_age))
        bulk_age = settings.retention_seconds
        self._in_batches(partial(bulk_store.delete_finished, older_than_seconds=bulk_age))
        return deleted

    def _in_batches(self, delete: Callable[..., int]) -> int:
        """`delete(session, limit=BATCH)` in transactions of its own until it comes up short."""
        deleted = 0
        for _ in range(RETENTION_ROUNDS):
            with self.ctx.db.transaction() as session:
                removed = delete(session, limit=BATCH)
            deleted += removed
            if removed < BATCH:
                break
        return deleted


@dataclass
class BulkRunner:
    """Advances running bulk operations, a batch at a time (BULK_BATCH_SIZE jobs, one
    transaction each), taking the operations in turn so a large one does not hold up the
    others; up to BULK_BATCHES batches per round."""

    ctx: Context
    name: str = "bulk"
    interval: float = 1.0
    batches: int = BULK_BATCHES

    def run_once(self, now: float) -> int:
        reached = 0
        left = self.batches
        operations = bulk.active(self.ctx, self.batches)
        while operations and left > 0:
            still = []
            for operation_id in operations[:left]:
                count = bulk.run_batch(self.ctx, operation_id)
                left -= 1
                if count is None:
                    continue
                reached += count
                if count == self.ctx.settings.bulk_batch_size:
                    still.append(operation_id)  # a short batch is an operation's last
            operations = still
        return reached


@dataclass
class Stats:
    """Counts the jobs that completed and failed per minute of their finished_at, queue and
    tenant (the table job_stats), from where the last round stopped: the overview's figures of
    the last hour. A round recounts its minutes whole, so rounds may repeat and overlap."""

    ctx: Context
    name: str = "stats"
    interval: float = 15.0

    def run_once(self, now: float) -> int:
        with self.ctx.db.transaction() as session:
            return stats_store.roll_up(session, datetime.fromtimestamp(now, UTC))


@dataclass
class Schedules:
    """Fires due schedules: for each fire time, its job, made in the transaction that moves
    the schedule on (app/services/schedules.py). Its rounds may overlap without harm (a
    schedule another runner holds is skipped; a fire time's job is one idempotency key), so
    its lock is short: a runner that dies holding it delays the next fires by at most
    `lock_seconds`, well within the misfire grace, and they fire late but fire."""

    ctx: Context
    name: str = "schedules"
    interval: float = 1.0
    lock_seconds: float = 5.0

    def run_once(self, now: float) -> int:
        return schedules.fire_due(self.ctx, datetime.fromtimestamp(now, UTC))


# How many duties all_duties makes: each runs in a thread of its own, and each thread holds at
# most one Postgres connection at a time (app/services/connections.py counts on it). The
# listener's thread is not among them: it holds no pooled connection, only one of its own
# (connections.LISTENER).
DUTY_COUNT = connections.DUTY_THREADS


def all_duties(ctx: Context) -> list[Duty]:
    settings = ctx.settings
    return [
        Promoter(ctx, interval=settings.promote_interval_seconds),
        Recovery(ctx, interval=settings.recovery_interval_seconds),
        Reconciler(ctx, interval=settings.reconcile_interval_seconds),
        Retention(ctx, interval=settings.retention_interval_seconds),
        Stats(ctx, interval=settings.stats_interval_seconds),
        BulkRunner(ctx, interval=settings.bulk_interval_seconds),
        Schedules(ctx, interval=settings.schedule_interval_seconds),
    ]


class DutyRunner:
    """Runs one duty every `interval` seconds in a thread, holding the duty's Redis lock for
    the length of each round. Errors are logged and the loop goes on."""

    def __init__(self, ctx: Context, duty: Duty, holder: str, stop: threading.Event) -> None:
        self.ctx = ctx
        self.duty = duty
        self.holder = holder
        self.stop = stop
        # Long enough for a big rebuild; released at once when the round ends. A duty whose
        # rounds may overlap says how long its own lasts.
        self.lock_ttl: float = getattr(duty, "lock_seconds", None) or max(30.0, duty.interval * 4)
        self.thread = threading.Thread(target=self.loop, name=f"duty-{duty.name}", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def loop(self) -> None:
        with log_context(worker_id=self.holder):
            while not self.stop.wait(self.duty.interval):
                self.run_round()

    def run_round(self, clock: Callable[[], float] = time.time) -> int | None:
        """One round if this runner gets the lock; None when another runner holds it."""
        client, keys, name = self.ctx.redis.client, self.ctx.keys, self.duty.name
        try:
            if not locks.acquire(client, keys, name, self.holder, self.lock_ttl):
                return None
        except redis.RedisError as exc:
            log.warning("duty lock unavailable", extra={"duty": name, "error": str(exc)})
            return None
        log.debug("duty started", extra={"action": "duty_started", "duty": name})
        try:
            return self.duty.run_once(clock())
        except (redis.RedisError, DBAPIError) as exc:
            log.warning(
                "duty failed", extra={"action": "duty_failed", "duty": name, "error": str(exc)}
            )
            return None
        except Exception:
            log.exception("duty crashed", extra={"action": "duty_failed", "duty": name})
            return None
        finally:
            log.debug("duty finished", extra={"action": "duty_finished", "duty": name})
            with contextlib.suppress(redis.RedisError):  # else the lock expires by itself
                locks.release(client, keys, name, self.holder)


def start_duties(ctx: Context, holder: str, stop: threading.Event) -> list[DutyRunner | Listener]:
    """A thread per duty, and the listener's."""
    runners: list[DutyRunner | Listener] = [
        DutyRunner(ctx, duty, holder, stop) for duty in all_duties(ctx)
    ]
    runners.append(Listener(ctx, holder, stop))
    for runner in runners:
        runner.start()
    return runners
