"""An asyncio Redis client for the API's long-polling lease endpoint, so a waiting HTTP
worker holds no thread. Created on first use inside the running event loop."""

from __future__ import annotations

import asyncio

import redis.asyncio as aioredis

MIN_WAIT = 0.01  # BLPOP's 0 means "forever"; "don't wait" is the smallest real timeout


class AsyncRedisHandle:
    def __init__(self, url: str) -> None:
        self._url = url
        self._client: aioredis.Redis | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def client(self) -> aioredis.Redis:
        loop = asyncio.get_running_loop()
        if self._client is None or self._loop is not loop:
            self._client = aioredis.Redis.from_url(self._url, socket_connect_timeout=2.0)
            self._loop = loop
        return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
        self._client = None


async def pop(client: aioredis.Redis, lists: list[str], wait: float) -> tuple[str, str] | None:
    """Block up to `wait` seconds for an id in `lists` (checked in order)."""
    if not lists:
        return None
    popped = await client.blpop(lists, timeout=max(wait, MIN_WAIT))
    if popped is None:
        return None
    return _text(popped[0]), _text(popped[1])


async def paused_queues(client: aioredis.Redis, paused_key: str) -> set[str]:
    return {_text(q) for q in await client.smembers(paused_key)}


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
