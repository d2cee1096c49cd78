"""What the reconciler reads and writes in Redis: the epoch key."""

from __future__ import annotations

import redis

from app.dispatch.keys import Keys


def epoch_present(client: redis.Redis, keys: Keys) -> bool:
    return bool(client.exists(keys.epoch))


def write_epoch(client: redis.Redis, keys: Keys, value: str) -> None:
    client.set(keys.epoch, value)
