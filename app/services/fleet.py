"""Operating the fleet: who is alive, how many processes a host should run, queue pauses and
queue depth. Every change is recorded in the audit log (in Postgres) before it is made (in
Redis)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from app.dispatch import fleet
from app.domain.audit import AuditAction
from app.domain.errors import HostNotFound
from app.domain.principal import Principal
from app.domain.states import JobStatus
from app.services import audit
from app.services.context import Context
from app.store import jobs as job_store


class QueueInfo(BaseModel):
    queue: str
    paused: bool
    depth: dict[str, int]  # jobs per status
    oldest_waiting_seconds: float | None  # age of the oldest runnable queued job
    ready_in_redis: int


def list_workers(ctx: Context) -> list[dict[str, Any]]:
    beats = fleet.read_heartbeats(ctx.redis.client, ctx.keys)
    return sorted(
        beats, key=lambda b: (b.get("host", ""), b.get("kind", ""), b.get("worker_id", ""))
    )


def served_queues(beats: list[dict[str, Any]]) -> set[str]:
    """The queues some live native worker process takes jobs from (a stopping one does not)."""
    served: set[str] = set()
    for beat in beats:
        if beat.get("kind") == "worker" and beat.get("state") != "stopping":
            served.update(str(queue) for queue in beat.get("queues") or [])
    return served


def set_fleet_size(ctx: Context, principal: Principal, host: str, processes: int) -> None:
    """Only for a host the fleet knows: one whose manager beats, or one already given a size
    (its manager may be restarting). A typo must not leave a key in Redis for ever. Recorded
    in the audit log first, then set in Redis."""
    client = ctx.redis.client
    if fleet.desired_size(client, ctx.keys, host) is None and host not in _manager_hosts(ctx):
        raise HostNotFound()
    _record(ctx, principal, AuditAction.FLEET_RESIZE, {"host": host, "processes": processes})
    fleet.set_desired_size(client, ctx.keys, host, processes)


def clear_fleet_size(ctx: Context, principal: Principal, host: str) -> None:
    """Forget the host's desired size: its manager goes back to its WORKER_PROCESSES."""
    if fleet.desired_size(ctx.redis.client, ctx.keys, host) is None:
        raise _no_size(host)
    _record(ctx, principal, AuditAction.FLEET_CLEAR, {"host": host})
    if not fleet.clear_desired_size(ctx.redis.client, ctx.keys, host):
        raise _no_size(host)  # cleared meanwhile by another call (recorded too)


def _no_size(host: str) -> HostNotFound:
    return HostNotFound(f"no desired size is stored for host '{host}'")


def _manager_hosts(ctx: Context) -> set[str]:
    beats = fleet.read_heartbeats(ctx.redis.client, ctx.keys)
    return {str(b.get("host")) for b in beats if b.get("kind") == "manager"}


def _record(
    ctx: Context, principal: Principal, action: AuditAction, target: dict[str, Any]
) -> None:
    """The audit event of a change that lives in Redis, committed before the change is made:
    Postgres cannot share a transaction with Redis, and a change must never go unrecorded."""
    with ctx.db.transaction() as session:
        audit.record(session, principal, action, target)


def pause(ctx: Context, principal: Principal, queue: str) -> None:
    _record(ctx, principal, AuditAction.QUEUE_PAUSE, {"queue": queue})
    fleet.pause(ctx.redis.client, ctx.keys, queue)


def resume(ctx: Context, principal: Principal, queue: str) -> None:
    _record(ctx, principal, AuditAction.QUEUE_RESUME, {"queue": queue})
    fleet.resume(ctx.redis.client, ctx.keys, queue)


def queues(ctx: Context) -> list[QueueInfo]:
    with ctx.db.transaction() as session:
        counts = job_store.queue_counts(session)
        now = job_store.database_now(session)
    paused = fleet.paused_queues(ctx.redis.client, ctx.keys)
    # A queue the fleet serves is listed before its first job, so it can be paused ahead of it.
    served = served_queues(fleet.read_heartbeats(ctx.redis.client, ctx.keys))
    names = sorted({c.queue for c in counts} | paused | served)
    in_redis = fleet.queue_lengths(ctx.redis.client, ctx.keys, names)
    by_name = {c.queue: c for c in counts}
    infos = []
    for name in names:
        entry = by_name.get(name)
        depth = {s.value: 0 for s in JobStatus}
        oldest = None
        if entry is not None:
            depth.update(entry.by_status)
            if entry.oldest_queued_at is not None:
                oldest = max(0.0, (now - entry.oldest_queued_at).total_seconds())
        infos.append(
            QueueInfo(
                queue=name,
                paused=name in paused,
                depth=depth,
                oldest_waiting_seconds=oldest,
                ready_in_redis=in_redis[name],
            )
        )
    return infos
