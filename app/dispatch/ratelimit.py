"""Per-key, per-action rate limits kept in Redis, so every API replica counts together.

slowapi's Limiter owns the storage and the moving-window strategy; we call its limiter from a
FastAPI dependency instead of decorating each route, so that the key is the authenticated API
key and the action is named, not derived from the URL. The API's routes count through the
asyncio flavour of the same strategy (`limits.aio`, on redis-py's asyncio client), on the
event loop, with no hop to a thread per request; the dashboard's pages, which run in threads,
count through the blocking one. Both keep the same keys with the same Lua scripts, so a key's
requests count together whichever door they came through.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time

import redis
from limits import RateLimitItem, parse
from limits.aio.storage import RedisStorage as AsyncRedisStorage
from limits.aio.strategies import MovingWindowRateLimiter as AsyncMovingWindow
from slowapi import Limiter

from app.dispatch.keys import Keys
from app.domain.errors import RateLimited
from app.settings import Settings

log = logging.getLogger(__name__)


class RateLimits:
    def __init__(self, settings: Settings, keys: Keys) -> None:
        self.enabled = settings.rate_limit_enabled
        self._limits: dict[str, RateLimitItem] = {
            "submit": parse(settings.rate_limit_submit),
            "read": parse(settings.rate_limit_read),
            "batch": parse(settings.rate_limit_batch),
            "write": parse(settings.rate_limit_write),
            "admin": parse(settings.rate_limit_admin),
        }
        # The storage pool is created now but connects on first use, in this process.
        self._limiter = Limiter(
            key_func=lambda: "",
            storage_uri=settings.redis_url,
            storage_options={"key_prefix": keys.ratelimit},
            strategy="moving-window",
        ).limiter
        self._redis_url = settings.redis_url
        self._key_prefix = keys.ratelimit
        # Built on first use inside the event loop that uses it: its connections belong there.
        self._async: tuple[asyncio.AbstractEventLoop, AsyncMovingWindow] | None = None

    def hit(self, action: str, key: str) -> None:
        """Count one request; raise RateLimited with the seconds to wait when over the limit.
        Blocking (a Redis round trip): for threads, not the event loop."""
        if not self.enabled:
            return
        item = self._limits[action]
        try:
            if self._limiter.hit(item, key, action):
                return
            reset_at, _remaining = self._limiter.get_window_stats(item, key, action)
        except redis.RedisError as exc:
            _unavailable(exc)
            return
        _refuse(item, action, reset_at)

    async def ahit(self, action: str, key: str) -> None:
        """`hit` for the event loop."""
        if not self.enabled:
            return
        item = self._limits[action]
        limiter = self._async_limiter()
        try:
            if await limiter.hit(item, key, action):
                return
            reset_at, _remaining = await limiter.get_window_stats(item, key, action)
        except (redis.RedisError, OSError) as exc:
            _unavailable(exc)
            return
        _refuse(item, action, reset_at)

    def _async_limiter(self) -> AsyncMovingWindow:
        loop = asyncio.get_running_loop()
        if self._async is None or self._async[0] is not loop:
            storage = AsyncRedisStorage(
                f"async+{self._redis_url}",
                implementation="redispy",
                key_prefix=self._key_prefix,
                socket_connect_timeout=2.0,
                socket_timeout=2.0,
            )
            self._async = (loop, AsyncMovingWindow(storage))
        return self._async[1]


def _unavailable(exc: Exception) -> None:
    # Fail open: a Redis outage must not stop producers; jobs still commit to Postgres.
    log.warning("rate limiter unavailable", extra={"error": str(exc)})


def _refuse(item: RateLimitItem, action: str, reset_at: float) -> None:
    retry_after = max(1, math.ceil(reset_at - time.time()))
    raise RateLimited(
        f"more than {item} '{action}' requests for this API key; retry in {retry_after} s",
        retry_after=retry_after,
    )
