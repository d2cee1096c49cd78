"""Whether a server answers: Postgres, Redis, the API. One-off clients that give up fast."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

if TYPE_CHECKING:
    # Only for annotations: the clients are imported when first used, not with this module.
    import redis


def redis_probe(url: str, timeout: float, ask: Callable[[redis.Redis], object]) -> object:
    """`ask(client)` on a one-off client, or None when the server cannot be reached."""
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    # redis-py retries a refused connection with backoff by default; a probe must answer fast.
    client = redis.Redis.from_url(
        url,
        socket_connect_timeout=timeout,
        socket_timeout=timeout,
        retry=Retry(NoBackoff(), 0),
    )
    try:
        return ask(client)
    except (redis.RedisError, OSError):
        return None
    finally:
        client.close()


def redis_answers(url: str, timeout: float = 1.0) -> bool:
    """True when a Redis server at `url` answers PING (with the URL's credentials)."""
    return bool(redis_probe(url, timeout, lambda client: client.ping()))


def libpq_url(url: str, database: str | None = None) -> str:
    """A SQLAlchemy URL made fit for libpq: no "+driver" part, optionally another database."""
    parts = urlsplit(url)
    scheme = parts.scheme.split("+", 1)[0]
    path = f"/{database}" if database is not None else parts.path
    return urlunsplit((scheme, parts.netloc, path, parts.query, parts.fragment))


def postgres_answers(url: str, timeout: float = 2.0) -> bool:
    """True when the Postgres server of `url` (a SQLAlchemy or libpq URL) accepts a connection.

    The URL's database may not exist yet (the migrate command creates it), so the server also
    counts as answering when its "postgres" database accepts the connection.
    """
    import psycopg2  # type: ignore[import-untyped]

    candidates = [libpq_url(url)]
    if urlsplit(url).path.strip("/") != "postgres":
        candidates.append(libpq_url(url, "postgres"))
    # libpq takes whole seconds and treats anything below 2 as 2.
    connect_timeout = max(1, math.ceil(timeout))
    for dsn in candidates:
        try:
            connection = psycopg2.connect(dsn, connect_timeout=connect_timeout)
        except psycopg2.Error:
            continue
        connection.close()
        return True
    return False


def api_answers(url: str) -> bool:
    """True when GET <url>/health answers 200."""
    import httpx

    try:
        return httpx.get(f"{url}/health", timeout=1).status_code == 200
    except httpx.TransportError:
        return False


def redact(url: str) -> str:
    """The URL without its password, for log lines."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
