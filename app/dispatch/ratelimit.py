"""Per-key, per-action rate limits kept in Redis, so every API replica counts together.

slowapi's Limiter owns the storage and the moving-window strategy; we call its limiter from a
FastAPI dependency instead of decorating each route, so that the key is the authenticated API
key and the action is named, not derived from the URL.
"""

from __future__ import annotations

import logging
import math
import time

import redis
from limits import RateLimitItem, parse
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

    def hit(self, action: str, key: str) -> None:
        """Count one request; raise RateLimited with the seconds to wait when over the limit."""
        if not self.enabled:
            return
        item = self._limits[action]
        try:
            if self._limiter.hit(item, key, action):
                return
            reset_at, _remaining = self._limiter.get_window_stats(item, key, action)
        except redis.RedisError as exc:
            # Fail open: a Redis outage must not stop producers; jobs still commit to Postgres.
            log.warning("rate limiter unavailable", extra={"error": str(exc)})
            return
        retry_after = max(1, math.ceil(reset_at - time.time()))
        raise RateLimited(
            f"more than {item} '{action}' requests for this API key; retry in {retry_after} s",
            retry_after=retry_after,
        )
