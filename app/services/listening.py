"""The listener: pushes to Redis the jobs that applications enqueued in their own transactions.

An enqueue inside an application's transaction (app/enqueue.py, or the SQL function
jobfleet.enqueue) sends `pg_notify` on the enqueued channel with the job's id; Postgres
delivers it when that transaction commits, and never if it rolls back. The listener LISTENs
on its own connection and, for each batch of ids it hears, reads those jobs that still wait
and pushes them as the API pushes after its commit: ready ids onto their lists, scheduled ones
into the delayed set. Postgres first, Redis second, as everywhere.

One listener pushes at a time across every host: it runs in every process that runs the
periodic duties, and only the holder of the `listener` lock listens; the others look at the
lock every RETRY seconds and take over when it is free (at once after a clean stop, within
LOCK_TTL after a crash). A notification sent while no listener listens is never delivered:
the reconciler's sweep pushes such a job after SWEEP_AFTER_SECONDS (docs/ARCHITECTURE.md,
"Transactional enqueue"). Pushing twice is harmless anyway (claims are conditional), so a
lock lost to a stalled holder costs a few duplicate ids at worst.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import uuid

import psycopg2  # type: ignore[import-untyped]
import redis

from app.dispatch import locks
from app.logging import log_context
from app.services.context import Context
from app.services.jobs import announce_after_commit
from app.store.listening import Listening

log = logging.getLogger(__name__)

LOCK = "listener"
LOCK_TTL = 5.0  # how long a crashed listener keeps the others from taking over
RENEW_EVERY = 1.0  # the holder extends its lock this often (and notices a stop this fast)
RETRY = 1.0  # a standby's look at the lock; the pause after a failed connection


def push(ctx: Context, listening: Listening, payloads: list[str]) -> int:
    """Push the jobs named by these notifications that still wait; how many were pushed."""
    job_ids = []
    for payload in payloads:
        try:
            job_ids.append(str(uuid.UUID(payload)))
        except ValueError:
            # Anyone who may connect may NOTIFY on the channel: only ids of real jobs count.
            log.warning("not a job id on the enqueued channel", extra={"payload": payload[:100]})
    if not job_ids:
        return 0
    waiting = listening.waiting_jobs(job_ids)
    announce_after_commit(ctx, waiting)
    return len(waiting)


class Listener:
    """LISTENs while it holds the `listener` lock, in a thread of its own; errors are logged
    and the loop goes on."""

    name = LOCK

    def __init__(self, ctx: Context, holder: str, stop: threading.Event) -> None:
        self.ctx = ctx
        self.holder = holder
        self.stop = stop
        self.listening = threading.Event()  # set while this runner listens
        self.thread = threading.Thread(target=self.loop, name="duty-listener", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def loop(self) -> None:
        with log_context(worker_id=self.holder):
            while not self.stop.is_set():
                if self.take():
                    try:
                        self.serve()
                    except Exception:
                        log.exception("listener crashed", extra={"action": "listener_failed"})
                    finally:
                        self.give_up()
                self.stop.wait(RETRY)

    def take(self) -> bool:
        """Take the lock, or keep it if this runner already holds it."""
        client, keys = self.ctx.redis.client, self.ctx.keys
        try:
            return locks.acquire(client, keys, LOCK, self.holder, LOCK_TTL) or locks.extend(
                client, keys, LOCK, self.holder, LOCK_TTL
            )
        except redis.RedisError as exc:
            log.warning("listener lock unavailable", extra={"error": str(exc)})
            return False

    def give_up(self) -> None:
        with contextlib.suppress(redis.RedisError):  # else the lock expires by itself
            locks.release(self.ctx.redis.client, self.ctx.keys, LOCK, self.holder)

    def serve(self) -> None:
        """Listen and push until told to stop, the lock is lost, or the connection fails."""
        try:
            listening = Listening(self.ctx.settings.database_url)
        except psycopg2.Error as exc:
            log.warning(
                "listener cannot connect", extra={"action": "listener_failed", "error": str(exc)}
            )
            return
        self.listening.set()
        log.info("listening for enqueued jobs", extra={"action": "listener_started"})
        try:
            self._listen(listening)
        except psycopg2.Error as exc:
            log.warning(
                "listener connection failed",
                extra={"action": "listener_failed", "error": str(exc)},
            )
        finally:
            self.listening.clear()
            listening.close()
            log.info("listener stopped", extra={"action": "listener_stopped"})

    def _listen(self, listening: Listening) -> None:
        client, keys = self.ctx.redis.client, self.ctx.keys
        renew_at = time.monotonic() + RENEW_EVERY
        while not self.stop.is_set():
            payloads = listening.wait(max(0.0, renew_at - time.monotonic()))
            if payloads:
                push(self.ctx, listening, payloads)
            if time.monotonic() >= renew_at:
                try:
                    held = locks.extend(client, keys, LOCK, self.holder, LOCK_TTL)
                except redis.RedisError as exc:
                    log.warning("listener lock unavailable", extra={"error": str(exc)})
                    held = False
                if not held:
                    log.warning("listener lock lost", extra={"action": "listener_lock_lost"})
                    return
                renew_at = time.monotonic() + RENEW_EVERY
