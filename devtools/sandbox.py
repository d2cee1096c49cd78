"""A database and a Redis key prefix of one's own, beside a stack's data: what the tests and
the benchmark run in, and erase at the end."""

from __future__ import annotations

import redis
from sqlalchemy.engine import make_url

from app.settings import Settings
from app.store.admin import drop_database


def with_database(database_url: str, database: str) -> str:
    """The same server and credentials, another database."""
    return make_url(database_url).set(database=database).render_as_string(hide_password=False)


def delete_keys(client: redis.Redis, prefix: str) -> None:
    """Delete every key under `prefix:`."""
    keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
    if keys:
        client.delete(*keys)


def erase(settings: Settings) -> None:
    """Drop the settings' database and delete their keys."""
    drop_database(settings.database_url)
    client = redis.Redis.from_url(settings.redis_url)
    try:
        delete_keys(client, settings.key_prefix)
    finally:
        client.close()
