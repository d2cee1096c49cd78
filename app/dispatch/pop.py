"""Workers take job ids from the ready lists: a blocking pop, highest priority first."""

from __future__ import annotations

import redis

from app.dispatch.keys import PRIORITIES, Keys


def ready_lists(keys: Keys, queues: list[str]) -> list[str]:
    """Priority first, then queue order: every queue's p9 before any queue's p8."""
    return [keys.ready(queue, priority) for priority in PRIORITIES for queue in queues]


def pop(client: redis.Redis, lists: list[str], timeout: float) -> tuple[str, str] | None:
    """Block until an id is ready in one of `lists` (checked in order) or `timeout` passes;
    returns the list it came from and the id."""
    if not lists:
        return None
    popped = client.blpop(lists, timeout=timeout)
    if popped is None:
        return None
    return _text(popped[0]), _text(popped[1])


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def take(client: redis.Redis, list_key: str, count: int) -> list[str]:
    """Up to `count` more ids from the head of one list, without waiting (LPOP with a count,
    Redis 6.2 or newer)."""
    taken = client.lpop(list_key, count)
    return [_text(value) for value in taken] if isinstance(taken, list) else []


def push_front(client: redis.Redis, list_key: str, job_ids: list[str]) -> None:
    """Return ids to the head of their list, in their order."""
    if job_ids:
        client.lpush(list_key, *reversed(job_ids))
