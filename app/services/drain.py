"""When a burst run (`python -m app worker --burst`) is done.

A burst run works until none of the queues it serves has work left, then exits. Work left in a
queue is a job of that queue, in Postgres (the truth, with no moment when a job is in flight
nowhere), that is:

- `queued`: its id waits in Redis, or was just taken and is being claimed;
- `processing`: running here or anywhere else (its outcome may be a retry);
- `scheduled` with its `run_at` passed: due, the promoter queues it within its interval;
- `scheduled` after an attempt (a retry in its backoff, whenever it comes due): the job is not
  finished, so a job that keeps failing ends the run in the dead-letter queue, not in backoff.

A job that a producer scheduled for later (`run_at`, `delay_seconds`) and that has not run yet
is not work left until its time comes. A paused queue has no work left: the run leaves its jobs
where they are (as `rq worker --burst` leaves a suspended queue alone).
"""

from __future__ import annotations

from dataclasses import dataclass

from app.dispatch import fleet
from app.services.context import Context
from app.store import drain as store


@dataclass(frozen=True)
class Backlog:
    busy: list[str]  # served queues with work left
    paused: list[str]  # served queues left alone because they are paused

    @property
    def drained(self) -> bool:
        return not self.busy


def backlog(ctx: Context, queues: list[str]) -> Backlog:
    paused = fleet.paused_queues(ctx.redis.client, ctx.keys)
    open_queues = [q for q in queues if q not in paused]
    busy: list[str] = []
    if open_queues:
        with ctx.db.begin() as session:
            busy = store.queues_with_work(session, open_queues)
    return Backlog(busy=busy, paused=[q for q in queues if q in paused])
