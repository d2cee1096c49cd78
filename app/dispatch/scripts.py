"""The Lua scripts that keep the ready lists, their tenant rings and the queue bells in step.

Every change to a ready list goes through one of these, so Redis applies it atomically: a
tenant is in its ring whenever its list holds ids (a ring may briefly name a tenant whose list
a blocking pop just emptied; the next take drops it). Scripts are sent by SHA1 (EVALSHA) and
loaded on the first NOSCRIPT, so the hot paths send a few bytes, not the source.

Ring and list names follow app/dispatch/keys.py: a list is `<ring without RING_SUFFIX>:t:<tenant>`.
The take-from-any script derives list names from ring names inside Redis; ring and list share
the queue's hash tag, so they live on one Cluster shard.
"""

from __future__ import annotations

from typing import Any

import redis
import redis.asyncio as aioredis
from redis.commands.core import AsyncScript, Script

from app.dispatch.keys import RING_SUFFIX

BELL_MAX = 256  # tokens a bell holds: at most this many idle loops wake for one push
BELL_TTL_MS = 60_000  # an unheard bell goes away; loops poll every second anyway

# push(list, ring, bell, tenant, ids, front): ids onto the list (tail, or head in their order
# for a hand-back), the tenant into the ring if absent, one bell token per id.
_PUSH_FUNCTION = f"""
local function push(list, ring, bell, tenant, ids, front)
    if front then
        for i = #ids, 1, -1 do redis.call('lpush', list, ids[i]) end
    else
        redis.call('rpush', list, unpack(ids))
    end
    if not redis.call('lpos', ring, tenant) then redis.call('rpush', ring, tenant) end
    local tokens = {{}}
    for i = 1, math.min(#ids, {BELL_MAX}) do tokens[i] = '1' end
    redis.call('rpush', bell, unpack(tokens))
    redis.call('ltrim', bell, -{BELL_MAX}, -1)
    redis.call('pexpire', bell, {BELL_TTL_MS})
end
"""

# KEYS: list, ring, bell. ARGV: tenant, 'front' or 'back', ids...
PUSH_SOURCE = (
    _PUSH_FUNCTION
    + """
local ids = {}
for i = 3, #ARGV do ids[#ids + 1] = ARGV[i] end
push(KEYS[1], KEYS[2], KEYS[3], ARGV[1], ids, ARGV[2] == 'front')
return #ids
"""
)

# KEYS: the delayed set. ARGV: groups of (id, list, ring, bell, tenant). Each id leaves the
# delayed set and joins its list in one step: a promoter that dies half-way leaves no id in
# both places or in neither (Postgres already says queued, so the reconciler would find it).
MOVE_SOURCE = (
    _PUSH_FUNCTION
    + """
for i = 1, #ARGV, 5 do
    redis.call('zrem', KEYS[1], ARGV[i])
    push(ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4], {ARGV[i]}, false)
end
return #ARGV / 5
"""
)

# KEYS: rings in take order, then the bells of their queues. ARGV: how many ids, how many
# rings. Takes up to ARGV[1] ids from the list of the first ring's head tenant that has any,
# rotating that ring so the next take serves the next tenant. Returns {ring index, tenant,
# ids}; when every ring is empty, clears the bells (no one need wake for what is gone) and
# returns nil. A push that lands after this script runs rings the bell again.
TAKE_ANY_SOURCE = f"""
local count, rings = ARGV[1], tonumber(ARGV[2])
for i = 1, rings do
    local ring = KEYS[i]
    local base = string.sub(ring, 1, -{len(RING_SUFFIX) + 1}) .. ':t:'
    for _ = 1, redis.call('llen', ring) do
        local tenant = redis.call('lmove', ring, ring, 'LEFT', 'RIGHT')
        local list = base .. tenant
        local ids = redis.call('lpop', list, count)
        if redis.call('llen', list) == 0 then redis.call('lrem', ring, -1, tenant) end
        if ids then return {{i - 1, tenant, ids}} end
    end
end
for i = rings + 1, #KEYS do redis.call('del', KEYS[i]) end
return false
"""

# KEYS: one tenant's lists in take order, then their rings in the same order. ARGV: tenant,
# how many ids. Returns {list index, ids} or nil.
TAKE_TENANT_SOURCE = """
local lists = #KEYS / 2
for i = 1, lists do
    local ids = redis.call('lpop', KEYS[i], ARGV[2])
    if ids then
        if redis.call('llen', KEYS[i]) == 0 then redis.call('lrem', KEYS[lists + i], 1, ARGV[1]) end
        return {i - 1, ids}
    end
end
return false
"""

# KEYS: a list a blocking pop just took from, its ring. ARGV: tenant. Leaves the ring if the
# list is now empty.
SETTLE_SOURCE = """
if redis.call('llen', KEYS[1]) == 0 then redis.call('lrem', KEYS[2], 1, ARGV[1]) end
return 0
"""


class Lua:
    """A script for the synchronous client (pipelines included); holds no connection."""

    def __init__(self, source: str) -> None:
        # Given bytes, redis-py needs no client to compute the SHA1: the client comes per call.
        self._script = Script(None, source.encode())  # type: ignore[arg-type]

    def __call__(
        self, client: redis.Redis | redis.client.Pipeline, keys: list[str], args: list[Any]
    ) -> Any:
        return self._script(keys, args, client)


class AsyncLua:
    """The same for the asyncio client."""

    def __init__(self, source: str) -> None:
        self._script = AsyncScript(None, source.encode())  # type: ignore[arg-type]

    async def __call__(self, client: aioredis.Redis, keys: list[str], args: list[Any]) -> Any:
        return await self._script(keys, args, client)


PUSH = Lua(PUSH_SOURCE)
MOVE = Lua(MOVE_SOURCE)
TAKE_ANY = Lua(TAKE_ANY_SOURCE)
TAKE_TENANT = Lua(TAKE_TENANT_SOURCE)
ASYNC_TAKE_ANY = AsyncLua(TAKE_ANY_SOURCE)
ASYNC_TAKE_TENANT = AsyncLua(TAKE_TENANT_SOURCE)
ASYNC_SETTLE = AsyncLua(SETTLE_SOURCE)
