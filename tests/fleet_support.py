"""Shared pieces of the fleet tests: submitting through the service, reading job rows and
heartbeats, real fleets run until their queues are drained (burst runs). (The `start_fleet`
fixture is in conftest.py.)"""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import text

from app.dispatch import fleet as dispatch_fleet
from app.domain.schemas import JobCreate
from app.services import jobs
from app.services.auth import Principal, Scope
from app.services.context import Context
from app.settings import Settings
from tests.fleet_tasks import side_effect_key
from tests.helpers import LiveFleet

PRODUCER = Principal(uuid.uuid4(), "acme", frozenset({Scope.PRODUCER}))
ADMIN = Principal(uuid.uuid4(), "ops", frozenset({Scope.ADMIN}))
# Retries come due at once (a backoff of at most 1 ms) and are queued within 20 ms: a test
# drives retries through their policy without waiting out real backoff.
FAST_RETRIES = {"RETRY_BASE": "1.5", "RETRY_CAP": "0.001", "PROMOTE_INTERVAL_SECONDS": "0.02"}


def submit(ctx: Context, task: str = "count", **fields: Any) -> str:
    return str(jobs.submit(ctx, PRODUCER, JobCreate(task=task, **fields)).job.id)


def statuses(ctx: Context) -> dict[str, int]:
    with ctx.db.transaction() as session:
        rows = session.execute(text("SELECT status, count(*) FROM jobs GROUP BY status")).all()
    return {str(status): int(count) for status, count in rows}


def job_row(ctx: Context, job_id: str) -> Any:
    with ctx.db.transaction() as session:
        return session.execute(text("SELECT * FROM jobs WHERE id = :id"), {"id": job_id}).one()


def attempts(ctx: Context, job_id: str) -> list[Any]:
    with ctx.db.transaction() as session:
        return list(
            session.execute(
                text("SELECT * FROM job_attempts WHERE job_id = :id ORDER BY id"), {"id": job_id}
            ).all()
        )


def all_done(ctx: Context, total: int, done: tuple[str, ...] = ("completed",)) -> bool:
    counts = statuses(ctx)
    return sum(counts.get(s, 0) for s in done) == total


def runs_per_job(ctx: Context) -> dict[str, int]:
    """How many times the `count` task ran for each job id (a side effect in Redis)."""
    raw = ctx.redis.client.hgetall(side_effect_key(ctx.settings.key_prefix))
    return {k.decode(): int(v) for k, v in raw.items()}


def workers_of(ctx: Context, host: str) -> list[dict[str, Any]]:
    beats = dispatch_fleet.read_heartbeats(ctx.redis.client, ctx.keys)
    return [b for b in beats if b.get("host") == host and b.get("kind") == "worker"]


def burst(
    settings: Settings, processes: int = 1, threads: int = 2, timeout: float = 60, **options: Any
) -> int:
    """Run a real `python -m app worker --burst` to its end; its exit status."""
    fleet = LiveFleet(settings, processes, threads, burst=True, **options)
    try:
        return fleet.process.wait(timeout=timeout)
    finally:
        fleet.stop()
