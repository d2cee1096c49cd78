"""Fleet state in Redis: heartbeats, the desired process count per host, paused queues."""

from __future__ import annotations

from typing import Any

import orjson
import redis

from app.dispatch import ready
from app.dispatch.keys import Keys


def write_heartbeat(
    client: redis.Redis, keys: Keys, worker_id: str, state: dict[str, Any], ttl: int
) -> None:
    client.set(keys.worker(worker_id), orjson.dumps(state), ex=ttl)


def remove_heartbeat(client: redis.Redis, keys: Keys, worker_id: str) -> None:
    client.delete(keys.worker(worker_id))


def read_heartbeats(client: redis.Redis, keys: Keys) -> list[dict[str, Any]]:
    """Every live heartbeat (a key that expired is a process presumed dead)."""
    names = sorted(client.scan_iter(match=keys.worker_pattern, count=500))
    if not names:
        return []
    beats: list[dict[str, Any]] = []
    for raw in client.mget(names):
        if raw is not None:
            beats.append(orjson.loads(raw))
    return beats


def heartbeat_alive(client: redis.Redis, keys: Keys, worker_id: str) -> bool:
    return bool(client.exists(keys.worker(worker_id)))


def set_desired_size(client: redis.Redis, keys: Keys, host: str, processes: int) -> None:
    client.set(keys.fleet_desired(host), processes)


def clear_desired_size(client: redis.Redis, keys: Keys, host: str) -> bool:
    """Forget the host's desired size; False when none was stored."""
    return bool(client.delete(keys.fleet_desired(host)))


def desired_size(client: redis.Redis, keys: Keys, host: str) -> int | None:
    raw = client.get(keys.fleet_desired(host))
    return int(raw) if raw is not None else None


def pause(client: redis.Redis, keys: Keys, queue: str) -> None:
    client.sadd(keys.paused, queue)


def resume(client: redis.Redis, keys: Keys, queue: str) -> None:
    client.srem(keys.paused, queue)


def paused_queues(client: redis.Redis, keys: Keys) -> set[str]:
    return {q.decode() if isinstance(q, bytes) else str(q) for q in client.smembers(keys.paused)}


def queue_lengths(client: redis.Redis, keys: Keys, queues: list[str]) -> dict[str, int]:
    """Ids waiting in Redis per queue (all priorities and tenants)."""
    return ready.lengths(client, keys, queues)
