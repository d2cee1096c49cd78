"""Running jobs: claim, finish, lease renewal, and the release of a dead worker's jobs.

Shared by the native fleet and (later) the HTTP lease protocol, so both follow one set of rules.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

import orjson

from app.dispatch.push import Announcement, announce
from app.domain.states import AttemptOutcome, JobStatus
from app.services.context import Context
from app.store import claims
from app.store.claims import Claimed

log = logging.getLogger(__name__)


class ResultNotSerialisable(TypeError):
    """A task returned a value that is not JSON: return dicts, lists, strings, numbers,
    booleans or None."""


def lease_seconds(ctx: Context) -> float:
    """A lease outlives a few missed heartbeats, no more: a dead worker's job is recovered in
    seconds, while a live worker renews its leases at every heartbeat."""
    return float(ctx.settings.heartbeat_ttl_seconds)


def claim(ctx: Context, job_ids: list[str], worker_id: str) -> list[Claimed]:
    with ctx.db.transaction() as session:
        claimed = claims.claim(
            session, [uuid.UUID(j) for j in job_ids], worker_id, lease_seconds(ctx)
        )
    for job in claimed:
        log.info(
            "job claimed",
            extra={
                "action": "job_claimed",
                "job_id": str(job.id),
                "worker_id": worker_id,
                "attempt": job.attempt,
            },
        )
    return claimed


def encode_result(result: Any) -> str:
    try:
        return orjson.dumps(result).decode()
    except TypeError as exc:
        raise ResultNotSerialisable(f"the task's result is not JSON-serialisable: {exc}") from exc


def complete(ctx: Context, job: Claimed, result_json: str) -> bool:
    """Record success; False when this worker's lease was lost and the job is someone else's."""
    with ctx.db.transaction() as session:
        done = claims.finish(
            session,
            job.id,
            job.lease_token,
            JobStatus.COMPLETED,
            AttemptOutcome.COMPLETED,
            result_json=result_json,
        )
    _log_finish(job, done, "job_completed")
    return done


def fail(ctx: Context, job: Claimed, error: str, outcome: AttemptOutcome) -> bool:
    """Record a failed attempt (fenced). The job is failed: it lands in the dead-letter queue."""
    with ctx.db.transaction() as session:
        done = claims.finish(
            session, job.id, job.lease_token, JobStatus.FAILED, outcome, error=error
        )
    _log_finish(job, done, "job_failed", error=error, outcome=outcome.value)
    return done


def _log_finish(job: Claimed, done: bool, action: str, **extra: Any) -> None:
    if done:
        log.info(action.replace("_", " "), extra={"action": action, "job_id": str(job.id), **extra})
    else:
        log.warning(
            "finish refused: lease lost",
            extra={"action": "job_finish_fenced", "job_id": str(job.id)},
        )


def renew_leases(ctx: Context, lease_tokens: list[uuid.UUID]) -> dict[uuid.UUID, bool]:
    with ctx.db.transaction() as session:
        return claims.extend_leases(session, lease_tokens, lease_seconds(ctx))


def release_dead_worker(ctx: Context, worker_id: str) -> None:
    """After a worker process died: a job past its timeout fails with "timeout"; any other job
    it held goes back to its queue, its lost attempt recorded."""
    requeued: list[Announcement] = []
    with ctx.db.transaction() as session:
        for held in claims.held_by(session, worker_id):
            if held.overdue:
                claims.finish(
                    session,
                    held.id,
                    held.lease_token,
                    JobStatus.FAILED,
                    AttemptOutcome.TIMEOUT,
                    error="timeout: killed after running past its timeout_seconds",
                )
                log.warning("job timed out", extra={"action": "job_failed", "job_id": str(held.id)})
                continue
            placed = claims.requeue_lost(session, held.id, held.lease_token, "worker lost")
            if placed is not None:
                requeued.append(Announcement(str(held.id), placed[0], placed[1], None))
                log.warning(
                    "job recovered from a dead worker",
                    extra={"action": "job_recovered", "job_id": str(held.id)},
                )
    if requeued:
        announce(ctx.redis.client, ctx.keys, requeued)
