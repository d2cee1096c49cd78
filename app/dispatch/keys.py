"""The Redis key schema. Every key Jobfleet touches is built here and nowhere else.

Redis holds only ids of waiting jobs and short-lived fleet state; Postgres is the truth, and
everything below can be rebuilt from it (see the reconciler).

key                        type        TTL         written by                        read by
<p>:{<queue>}:p<0-9>       list        none        API submit (RPUSH), promoter,     workers (BLPOP)
                                                   reconciler
<p>:delayed                sorted set  none        submit and retries (ZADD, score   promoter
                                                   = run_at in epoch seconds)
<p>:worker:<worker id>     string      heartbeat   every worker process and manager  GET /workers,
                           (JSON)      TTL                                           recovery
<p>:paused                 set         none        API pause and resume              workers
<p>:fleet:<host>:desired   string      none        API PUT /fleet/{host}/size (only  manager
                                                   for a host with a live manager
                                                   or a size already stored);
                                                   DELETE removes it
<p>:epoch                  string      none        bootstrap; absent = data lost     reconciler
<p>:lock:<duty>            string      lock TTL    periodic duties                   periodic duties
<p>:ratelimit:...          (limits)    window      API rate limiter                  API

The queue name sits in a hash tag ({...}) so Redis Cluster keeps a queue's lists on one shard.
"""

from __future__ import annotations

from dataclasses import dataclass

PRIORITIES = range(9, -1, -1)  # highest first: BLPOP checks its keys in this order


@dataclass(frozen=True)
class Keys:
    prefix: str

    def ready(self, queue: str, priority: int) -> str:
        return f"{self.prefix}:{{{queue}}}:p{priority}"

    def ready_lists(self, queue: str) -> list[str]:
        """A queue's lists, highest priority first."""
        return [self.ready(queue, p) for p in PRIORITIES]

    @property
    def delayed(self) -> str:
        return f"{self.prefix}:delayed"

    def worker(self, worker_id: str) -> str:
        return f"{self.prefix}:worker:{worker_id}"

    @property
    def worker_pattern(self) -> str:
        return f"{self.prefix}:worker:*"

    @property
    def paused(self) -> str:
        return f"{self.prefix}:paused"

    def fleet_desired(self, host: str) -> str:
        return f"{self.prefix}:fleet:{host}:desired"

    @property
    def epoch(self) -> str:
        return f"{self.prefix}:epoch"

    def lock(self, duty: str) -> str:
        return f"{self.prefix}:lock:{duty}"

    @property
    def ratelimit(self) -> str:
        return f"{self.prefix}:ratelimit"

    @property
    def everything(self) -> str:
        """A SCAN pattern for every key of this prefix (tests clean up with it)."""
        return f"{self.prefix}:*"
