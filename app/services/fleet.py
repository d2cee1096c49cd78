"""Operating the fleet: who is alive, how many processes a host should run, queue pauses and
queue depth."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from app.dispatch import fleet
from app.domain.errors import HostNotFound
from app.domain.states import JobStatus
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


def set_fleet_size(ctx: Context, host: str, processes: int) -> None:
    """Only for a host the fleet knows: one whose manager beats, or one already given a size
    (its manager may be restarting). A typo must not leave a key in Redis for ever."""
    client = ctx.redis.client
    if fleet.desired_size(client, ctx.keys, host) is None and host not in _manager_hosts(ctx):
        raise HostNotFound()
    fleet.set_desired_size(client, ctx.keys, host, processes)


def clear_fleet_size(ctx: Context, host: str) -> None:
    """Forget the host's desired size: its manager goes back to its WORKER_PROCESSES."""
    if not fleet.clear_desired_size(ctx.redis.client, ctx.keys, host):
        raise HostNotFound(f"no desired size is stored for host '{host}'")


def _manager_hosts(ctx: Context) -> set[str]:
    beats = fleet.read_heartbeats(ctx.redis.client, ctx.keys)
    return {str(b.get("host")) for b in beats if b.get("kind") == "manager"}


def pause(ctx: Context, queue: str) -> None:
    fleet.pause(ctx.redis.client, ctx.keys, queue)


def resume(ctx: Context, queue: str) -> None:
    fleet.resume(ctx.redis.client, ctx.keys, queue)


def queues(ctx: Context) -> list[QueueInfo]:
    with ctx.db.transaction() as session:
        counts = job_store.queue_counts(session)
        now = job_store.database_now(session)
    paused = fleet.paused_queues(ctx.redis.client, ctx.keys)
    names = sorted({c.queue for c in counts} | paused)
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
