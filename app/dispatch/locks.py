"""A Redis lock with a TTL, so one runner at a time performs each periodic duty across hosts.

SET NX PX takes it; a Lua compare-and-delete releases it only for its holder, so a runner whose
lock expired mid-run cannot release the next holder's lock. A holder that keeps the lock for
long (the listener) extends it with a compare-and-expire before it runs out.
"""

from __future__ import annotations

import redis

from app.dispatch.keys import Keys

_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then
    return redis.call('del', KEYS[1])
end
return 0
"""


_EXTEND = """
if redis.call('get', KEYS[1]) == ARGV[1] then
    return redis.call('pexpire', KEYS[1], ARGV[2])
end
return 0
"""


def acquire(client: redis.Redis, keys: Keys, duty: str, holder: str, ttl_seconds: float) -> bool:
    return bool(client.set(keys.lock(duty), holder, nx=True, px=int(ttl_seconds * 1000)))


def release(client: redis.Redis, keys: Keys, duty: str, holder: str) -> bool:
    return bool(client.eval(_RELEASE, 1, keys.lock(duty), holder))


def extend(client: redis.Redis, keys: Keys, duty: str, holder: str, ttl_seconds: float) -> bool:
    """Give the lock `ttl_seconds` more, if `holder` still holds it; False when it does not."""
    return bool(client.eval(_EXTEND, 1, keys.lock(duty), holder, int(ttl_seconds * 1000)))
