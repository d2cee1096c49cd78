"""One Redis connection pool per process, created on first use and rebuilt after a fork."""

from __future__ import annotations

import os
import threading

import redis

from app.settings import Settings

SOCKET_TIMEOUT = 5.0


class RedisHandle:
    def __init__(self, settings: Settings) -> None:
        self._url = settings.redis_url
        self._client: redis.Redis | None = None
        self._pid = 0
        self._lock = threading.Lock()

    @property
    def client(self) -> redis.Redis:
        if self._client is None or self._pid != os.getpid():
            with self._lock:
                if self._client is None or self._pid != os.getpid():
                    # The inherited pool's sockets belong to the parent: forget them unclosed.
                    self._client = redis.Redis.from_url(
                        self._url,
                        socket_timeout=SOCKET_TIMEOUT,
                        socket_connect_timeout=2.0,
                        health_check_interval=30,
                    )
                    self._pid = os.getpid()
        return self._client

    def close(self) -> None:
        if self._client is not None and self._pid == os.getpid():
            self._client.close()
        self._client = None
