"""The bounded sets of names admitted as metric label values (queues, tasks).

Tenants choose queue and task names; a label value per name would let them grow the number of
series without end. Every process that counts a job asks here whether a name may be a label
value of its own: one set per label, shared by every process, admits names while it is
smaller than its bound.
"""

from __future__ import annotations

from collections.abc import Sequence

import redis

# One script call per batch of names: a member is admitted; a newcomer is added only while the
# set is below the bound, so processes admitting at once can never push it past the bound.
_ADMIT = """
local bound = tonumber(ARGV[1])
local answers = {}
for i = 2, #ARGV do
    if redis.call('sismember', KEYS[1], ARGV[i]) == 1 then
        answers[i - 1] = 1
    elseif redis.call('scard', KEYS[1]) < bound then
        redis.call('sadd', KEYS[1], ARGV[i])
        answers[i - 1] = 1
    else
        answers[i - 1] = 0
    end
end
return answers
"""


def admit(client: redis.Redis, key: str, bound: int, names: Sequence[str]) -> list[bool]:
    """For each name, in order: True when it is (now) in the set at `key`."""
    if not names:
        return []
    answers = client.eval(_ADMIT, 1, key, bound, *names)
    return [bool(answer) for answer in answers]
