"""An asyncio Redis client for the API's long-polling lease endpoint, so a waiting HTTP
worker holds no thread. Created on first use inside the running event loop."""

from __future__ import annotations

import asyncio

import redis.asyncio as aioredis

from app.dispatch import scripts
from app.dispatch.keys import Keys
from app.dispatch.ready import Taken, take_order, taken_any, taken_tenant, tenant_lists

MIN_WAIT = 0.01  # BLPOP's 0 means "forever"; "don't wait" is the smallest real timeout
# A long poll waits in slices of at most this long, so no single Redis call outlives the
# client's socket timeout, and a pause of the queue is noticed within a slice.
WAIT_SLICE = 5.0
SOCKET_TIMEOUT = WAIT_SLICE + 5.0


class AsyncRedisHandle:
    def __init__(self, url: str) -> None:
        self._url = url
        self._client: aioredis.Redis | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def client(self) -> aioredis.Redis:
        loop = asyncio.get_running_loop()
        if self._client is None or self._loop is not loop:
            self._client = aioredis.Redis.from_url(
                self._url, socket_connect_timeout=2.0, socket_timeout=SOCKET_TIMEOUT
            )
            self._loop = loop
        return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
        self._client = None


async def take_any(client: aioredis.Redis, keys: Keys, queue: str) -> Taken | None:
    """One id of `queue`, any tenant, no waiting (see ready.take_any)."""
    rings, places = take_order(keys, [queue])
    got = await scripts.ASYNC_TAKE_ANY(client, [*rings, keys.bell(queue)], [1, len(rings)])
    return taken_any(got, places)


async def wait_bell(client: aioredis.Redis, keys: Keys, queue: str, wait: float) -> bool:
    """Block up to `wait` seconds (at most one slice) for a push to `queue`."""
    rung = await client.blpop([keys.bell(queue)], timeout=_slice(wait))
    return rung is not None


async def take_tenant(
    client: aioredis.Redis, keys: Keys, queue: str, tenant: str, wait: float
) -> Taken | None:
    """One id of `tenant`'s jobs in `queue`, highest priority first, waiting up to `wait`
    seconds (at most one slice) for one to arrive. A blocking pop on the tenant's own lists
    wakes for its jobs only."""
    lists, rings = tenant_lists(keys, queue, tenant)
    got = await scripts.ASYNC_TAKE_TENANT(client, [*lists, *rings], [tenant, 1])
    taken = taken_tenant(got, queue, tenant)
    if taken is not None or wait <= 0:
        return taken
    popped = await client.blpop(lists, timeout=_slice(wait))
    if popped is None:
        return None
    index = lists.index(_text(popped[0]))
    await scripts.ASYNC_SETTLE(client, [lists[index], rings[index]], [tenant])
    return taken_tenant([index, [popped[1]]], queue, tenant)


async def paused_queues(client: aioredis.Redis, paused_key: str) -> set[str]:
    return {_text(q) for q in await client.smembers(paused_key)}


def _slice(wait: float) -> float:
    return min(max(wait, MIN_WAIT), WAIT_SLICE)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
