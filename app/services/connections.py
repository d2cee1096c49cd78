"""How many Postgres connections each kind of process may hold: the terms of the sizing
formula in docs/OPERATIONS.md ("Sizing Postgres connections").

Every process bounds its pool by what its threads can use at once (each thread holds at most
one session at a time), so that the connections of a deployment add up to a number Postgres's
`max_connections` can be sized for. Only the API grows under load, up to DB_POOL_SIZE +
DB_MAX_OVERFLOW per worker process; every other pool opens no more than it keeps.
"""

from __future__ import annotations

from app.settings import Settings
from app.store.engine import Pool

# One connection beyond what the threads can hold at once: a session still being returned
# while its thread starts the next does not wait for it.
SPARE = 1
# The listener's own connection (app/store/listening.py), outside every pool. Every process
# that runs the duties may listen, but only the holder of the listener's lock opens it: one in
# the whole deployment (two for the moment a stalled holder takes to notice its lock is gone).
LISTENER = 1


# The periodic duties' threads: app/services/maintenance.py's `all_duties` makes this many (a
# test checks it). A number of its own here, so that sizing a pool imports none of the duties'
# modules: a manager sizes its own before its duties start, and loading their modules then
# would take the CPU its first children need to reach their first claim.
DUTY_THREADS = 7


def api(settings: Settings) -> Pool:
    """An API worker process: its request handlers and its group-commit flushers."""
    return Pool(settings.db_pool_size, settings.db_max_overflow, "api")


def api_metrics() -> Pool:
    """The API's metrics port: the scrape-time gauges, one scrape at a time as a rule."""
    return Pool(1, SPARE, "api-metrics")


def worker(threads: int) -> Pool:
    """A worker process: its job loops, and its main thread renewing leases at each heartbeat."""
    return Pool(threads + 1 + SPARE, 0, "worker")


def manager(settings: Settings) -> Pool:
    """A fleet's manager: its duty threads (when it runs them) and its own tick (releasing the
    jobs of a dead worker process, a burst run's look at its queues). With the duties, the
    listener may hold one more connection, outside the pool (LISTENER)."""
    duties = DUTY_THREADS if settings.run_duties else 0
    return Pool(duties + 1 + SPARE, 0, "manager")


def manager_start() -> Pool:
    """A fleet's manager before its first children start: a burst run's one look at its
    queues, on a connection closed before the children are forked."""
    return Pool(1, 0, "manager")


def maintenance() -> Pool:
    """`python -m app maintenance`: its duty threads (and the listener's, outside the pool)."""
    return Pool(DUTY_THREADS + SPARE, 0, "maintenance")


def command(name: str) -> Pool:
    """A command line that runs one step at a time (`keys`, `dev` making its demo key)."""
    return Pool(1, SPARE, name)


def deployment(
    settings: Settings, api_replicas: int, fleet_replicas: int, maintenance_processes: int = 0
) -> int:
    """The most connections a deployment opens when every process of it uses its whole pool:
    api replicas x (API_WORKERS x (DB_POOL_SIZE + DB_MAX_OVERFLOW) + the metrics port's)
    + fleet replicas x (the manager's + WORKER_PROCESSES x (WORKER_THREADS + 2))
    + maintenance processes x theirs + 1 for the listener + 1 for a `migrate` or `keys` run.
    The listener's connection counts once: only the holder of its lock opens one. Postgres
    also keeps `superuser_reserved_connections` (3) out of `max_connections` for a
    superuser."""
    api_replica = settings.api_workers * api(settings).most + api_metrics().most
    fleet_replica = (
        manager(settings).most + settings.worker_processes * worker(settings.worker_threads).most
    )
    runs_duties = maintenance_processes > 0 or (fleet_replicas > 0 and settings.run_duties)
    return (
        api_replicas * api_replica
        + fleet_replicas * fleet_replica
        + maintenance_processes * maintenance().most
        + (LISTENER if runs_duties else 0)
        + 1
    )
