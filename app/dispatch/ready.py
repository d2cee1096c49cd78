"""The ready lists: pushing ids of committed jobs, taking them, waiting for them.

One list per queue, priority and tenant (see keys.py). The native fleet and cross-tenant leases
take from any tenant (`take_any`: highest priority first, tenants in turn); an HTTP worker of
one tenant takes from that tenant's lists only (`take_tenant`). An idle taker blocks on the
bells of its queues (`wait`), which every push rings.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import redis

from app.dispatch import scripts
from app.dispatch.keys import PRIORITIES, Keys

PUSH_CHUNK = 1000  # ids per script call: Lua's unpack has a limit of a few thousand
WAKE_TTL = 10  # seconds: longer than any wait of a job loop


@dataclass(frozen=True)
class Place:
    """Where a ready id waits: its queue, priority and tenant."""

    queue: str
    priority: int
    tenant: str


@dataclass(frozen=True)
class Taken:
    place: Place
    job_ids: list[str]


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def push(
    client: redis.Redis | redis.client.Pipeline,
    keys: Keys,
    place: Place,
    job_ids: Sequence[str],
    front: bool = False,
) -> None:
    """Put ids on their list: at the tail (new work, FIFO), or at the head in their order
    (`front`: ids handed back, which were next before they were taken)."""
    chunks = [job_ids[i : i + PUSH_CHUNK] for i in range(0, len(job_ids), PUSH_CHUNK)]
    # Handed back to the head: the last chunk goes first, so the whole keeps its order.
    for chunk in reversed(chunks) if front else chunks:
        scripts.PUSH(
            client,
            [
                keys.ready(place.queue, place.priority, place.tenant),
                keys.ring(place.queue, place.priority),
                keys.bell(place.queue),
            ],
            [place.tenant, "front" if front else "back", *chunk],
        )


def push_many(
    client: redis.Redis, keys: Keys, pushes: Iterable[tuple[Place, list[str]]], front: bool = False
) -> None:
    """Several lists' pushes in one round trip."""
    pipe = client.pipeline(transaction=False)
    for place, job_ids in pushes:
        if job_ids:
            push(pipe, keys, place, job_ids, front)
    pipe.execute()


def take_order(keys: Keys, queues: list[str]) -> tuple[list[str], list[tuple[str, int]]]:
    places = [(queue, priority) for priority in PRIORITIES for queue in queues]
    return [keys.ring(q, p) for q, p in places], places


def take_any(client: redis.Redis, keys: Keys, queues: list[str], count: int) -> Taken | None:
    """Up to `count` ids of one list, without waiting: the highest priority that has any,
    across `queues` in their order, from the tenant whose turn it is."""
    if not queues:
        return None
    rings, places = take_order(keys, queues)
    bells = [keys.bell(queue) for queue in queues]
    got = scripts.TAKE_ANY(client, [*rings, *bells], [count, len(rings)])
    return taken_any(got, places)


def taken_any(got: object, places: list[tuple[str, int]]) -> Taken | None:
    if not got:
        return None
    assert isinstance(got, list)
    index, tenant, ids = got
    queue, priority = places[int(index)]
    return Taken(Place(queue, priority, _text(tenant)), [_text(i) for i in ids])


def tenant_lists(keys: Keys, queue: str, tenant: str) -> tuple[list[str], list[str]]:
    """A tenant's lists of `queue`, highest priority first, and their rings."""
    lists = [keys.ready(queue, p, tenant) for p in PRIORITIES]
    return lists, [keys.ring(queue, p) for p in PRIORITIES]


def take_tenant(
    client: redis.Redis, keys: Keys, queue: str, tenant: str, count: int
) -> Taken | None:
    """Up to `count` ids of `tenant`'s jobs in `queue`, highest priority first, no waiting."""
    lists, rings = tenant_lists(keys, queue, tenant)
    return taken_tenant(
        scripts.TAKE_TENANT(client, [*lists, *rings], [tenant, count]), queue, tenant
    )


def taken_tenant(got: object, queue: str, tenant: str) -> Taken | None:
    if not got:
        return None
    assert isinstance(got, list)
    index, ids = got
    return Taken(Place(queue, list(PRIORITIES)[int(index)], tenant), [_text(i) for i in ids])


def wait(
    client: redis.Redis, keys: Keys, queues: list[str], timeout: float, worker_id: str = ""
) -> bool:
    """Block until a push rings one of the queues' bells, or `worker_id` is woken (`wake`), or
    `timeout` passes; True unless the time ran out."""
    if not queues:
        return False
    waits = [keys.bell(q) for q in queues] + ([keys.wake(worker_id)] if worker_id else [])
    return client.blpop(waits, timeout=timeout) is not None


def wake(client: redis.Redis, keys: Keys, worker_id: str, loops: int) -> None:
    """End the waits of up to `loops` job loops of `worker_id` at once (it is stopping),
    rather than when their timeout runs out. Tokens no loop takes expire."""
    key = keys.wake(worker_id)
    pipe = client.pipeline(transaction=False)
    pipe.rpush(key, *(["1"] * loops))
    pipe.expire(key, WAKE_TTL)
    pipe.execute()


def head(client: redis.Redis, keys: Keys, place: Place, count: int) -> list[str]:
    """The oldest ids of a list (the next to be taken)."""
    key = keys.ready(place.queue, place.priority, place.tenant)
    return [_text(r) for r in client.lrange(key, 0, count - 1)]


def lengths(client: redis.Redis, keys: Keys, queues: list[str]) -> dict[str, int]:
    """Ids waiting per queue, every priority and tenant: the rings say which lists to count."""
    if not queues:
        return {}
    pipe = client.pipeline(transaction=False)
    places = [(queue, priority) for queue in queues for priority in PRIORITIES]
    for queue, priority in places:
        pipe.lrange(keys.ring(queue, priority), 0, -1)
    members = pipe.execute()
    lists: list[tuple[str, str]] = []
    for (queue, priority), tenants in zip(places, members, strict=True):
        lists += [(queue, keys.ready(queue, priority, _text(t))) for t in set(tenants)]
    for _, key in lists:
        pipe.llen(key)
    counts = pipe.execute() if lists else []
    totals = dict.fromkeys(queues, 0)
    for (queue, _), count in zip(lists, counts, strict=True):
        totals[queue] += int(count)
    return totals


def tenant_lengths(
    client: redis.Redis, keys: Keys, queues: list[str], tenant: str
) -> dict[str, int]:
    """Ids waiting per queue in one tenant's lists (every priority)."""
    pipe = client.pipeline(transaction=False)
    for queue in queues:
        for key in tenant_lists(keys, queue, tenant)[0]:
            pipe.llen(key)
    counts = iter(pipe.execute() if queues else [])
    return {queue: sum(int(next(counts)) for _ in PRIORITIES) for queue in queues}


def holds(client: redis.Redis, keys: Keys, place: Place, job_id: str) -> bool:
    """Whether the id waits in its ready list (LPOS: a walk of the list inside Redis)."""
    key = keys.ready(place.queue, place.priority, place.tenant)
    return client.lpos(key, job_id) is not None


def forget_legacy_lists(client: redis.Redis, keys: Keys) -> int:
    """Delete ready lists of the layout before per-tenant lists; their jobs are pushed again
    from Postgres by the rebuild that follows an upgrade."""
    legacy = list(client.scan_iter(match=keys.legacy_ready_pattern(), count=1000))
    if legacy:
        client.delete(*legacy)
    return len(legacy)
