"""The Redis key schema. Every key Jobfleet touches is built here and nowhere else.

Redis holds only ids of waiting jobs and short-lived fleet state; Postgres is the truth, and
everything below can be rebuilt from it (see the reconciler).

key                          type        TTL        written by                  read by
<p>:{<q>}:p<n>:t:<tenant>    list        none       submit, promoter,           native fleet, HTTP
                                                    reconciler, hand-backs      workers (ready.py)
<p>:{<q>}:p<n>:tenants       list        none       the same scripts: holds a   the take scripts
                                                    tenant while its list of    (round robin)
                                                    q at priority n has ids
<p>:{<q>}:bell               list        BELL_TTL   every push: a token per id  idle job loops and
                                                    (at most BELL_MAX)          cross-tenant leases
<p>:delayed                  sorted set  none       submit and retries (ZADD,   promoter
                                                    score = run_at, epoch s)
<p>:worker:<worker id>       string      heartbeat  every worker process and    GET /workers,
                             (JSON)      TTL        manager                     recovery
<p>:paused                   set         none       API pause and resume        workers
<p>:wake:<worker id>         list        WAKE_TTL   a stopping worker process:  its own idle job
                                                    a token per job loop        loops (ready.py)
<p>:fleet:<host>:desired     string      none       API PUT /fleet/{host}/size  manager
                                                    (a known host only);
                                                    DELETE removes it
<p>:epoch:2                  string      none       bootstrap; absent = data    reconciler
                                                    lost (or an older layout)
<p>:lock:<duty>              string      lock TTL   periodic duties             periodic duties
<p>:ratelimit:...            (limits)    window     API rate limiter            API
<p>:labels:<queue|task>      set         none       every process that counts   the same (metric
                                                    a job (admits names up to   labels)
                                                    METRICS_MAX_QUEUES/_TASKS)
<p>:ui:ended:<session id>    string      the        dashboard sign-out          every dashboard
                                        session's                               page (a copied
                                        time left                               cookie is dead)

Ready ids live in one list per queue, priority and tenant (FIFO: RPUSH, LPOP), so that an HTTP
worker of one tenant takes only that tenant's jobs without looking at anyone else's. Which
tenants have ids waiting at a priority is a ring of tenant names beside the lists; the native
fleet and cross-tenant leases take from the ring's head tenant and rotate it, so tenants take
turns within a priority. The scripts in ready.py keep every list and its ring in step.

The queue name sits in a hash tag ({...}) so Redis Cluster keeps a queue's keys on one shard.
"""

from __future__ import annotations

from dataclasses import dataclass

PRIORITIES = range(9, -1, -1)  # highest first: the take scripts look in this order
RING_SUFFIX = ":tenants"


@dataclass(frozen=True)
class Keys:
    prefix: str

    def ready(self, queue: str, priority: int, tenant: str) -> str:
        """The ready ids of one tenant's jobs in `queue` at `priority`, oldest first."""
        return f"{self.prefix}:{{{queue}}}:p{priority}:t:{tenant}"

    def ring(self, queue: str, priority: int) -> str:
        """The tenants whose ready list of `queue` at `priority` holds ids, in turn order.
        A ready list's name is its ring's name without RING_SUFFIX, plus ":t:<tenant>"."""
        return f"{self.prefix}:{{{queue}}}:p{priority}{RING_SUFFIX}"

    def rings(self, queues: list[str]) -> list[str]:
        """Priority first, then queue order: every queue's p9 before any queue's p8."""
        return [self.ring(queue, priority) for priority in PRIORITIES for queue in queues]

    def bell(self, queue: str) -> str:
        return f"{self.prefix}:{{{queue}}}:bell"

    def legacy_ready_pattern(self) -> str:
        """A SCAN pattern for the ready lists of the layout before per-tenant lists."""
        return f"{self.prefix}:{{*}}:p[0-9]"

    @property
    def delayed(self) -> str:
        return f"{self.prefix}:delayed"

    def worker(self, worker_id: str) -> str:
        return f"{self.prefix}:worker:{worker_id}"

    def wake(self, worker_id: str) -> str:
        """Tokens that end the waits of a stopping worker process's job loops."""
        return f"{self.prefix}:wake:{worker_id}"

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
        # Versioned with the ready-list layout: after an upgrade from an older layout the key
        # is missing, so the reconciler rebuilds Redis from Postgres in the new layout.
        return f"{self.prefix}:epoch:2"

    def lock(self, duty: str) -> str:
        return f"{self.prefix}:lock:{duty}"

    @property
    def ratelimit(self) -> str:
        return f"{self.prefix}:ratelimit"

    def metric_labels(self, label: str) -> str:
        """The names admitted as values of a metric label (`queue` or `task`)."""
        return f"{self.prefix}:labels:{label}"

    def ended_session(self, session_id: str) -> str:
        """Set when a dashboard session signs out: its cookie no longer opens a page."""
        return f"{self.prefix}:ui:ended:{session_id}"

    @property
    def everything(self) -> str:
        """A SCAN pattern for every key of this prefix (tests clean up with it)."""
        return f"{self.prefix}:*"
