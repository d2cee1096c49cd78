"""The per-process handles every service needs, built from the settings at an entry point."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from app.dispatch.aio import AsyncRedisHandle
from app.dispatch.client import RedisHandle
from app.dispatch.keys import Keys
from app.services.keycache import PrincipalCache
from app.services.metric_labels import MetricLabels
from app.settings import Settings
from app.store.engine import Database, Pool

if TYPE_CHECKING:
    from app.dispatch.ratelimit import RateLimits


@dataclass
class Context:
    settings: Settings
    statement_timeout_ms: int = 0  # for every Postgres statement of this process; 0: none
    pool: Pool | None = None  # this process's Postgres connections (app/services/connections.py)
    db: Database = field(init=False)
    redis: RedisHandle = field(init=False)
    aredis: AsyncRedisHandle = field(init=False)
    keys: Keys = field(init=False)
    principals: PrincipalCache = field(init=False)
    metric_labels: MetricLabels = field(init=False)
    _rate_limits: RateLimits | None = field(init=False, default=None)
    _lock: threading.Lock = field(init=False, default_factory=threading.Lock)

    def __post_init__(self) -> None:
        # Handles only: no connection is opened until first use, in the process that uses it.
        self.db = Database(self.settings, self.statement_timeout_ms, self.pool)
        self.redis = RedisHandle(self.settings)
        self.aredis = AsyncRedisHandle(self.settings.redis_url)
        self.keys = Keys(self.settings.key_prefix)
        self.principals = PrincipalCache()
        settings = self.settings
        self.metric_labels = MetricLabels(
            self.redis, self.keys, settings.metrics_max_queues, settings.metrics_max_tasks
        )

    @property
    def rate_limits(self) -> RateLimits:
        """The API's limiter, built on first use: processes that serve no request (the fleet,
        the CLI) never build one, nor import slowapi and limits (a tenth of a second)."""
        if self._rate_limits is None:
            from app.dispatch.ratelimit import RateLimits

            with self._lock:
                if self._rate_limits is None:
                    self._rate_limits = RateLimits(self.settings, self.keys)
        return self._rate_limits

    def close(self) -> None:
        self.db.dispose()
        self.redis.close()
