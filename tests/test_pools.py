"""Connection pools that add up: each process holds no more Postgres connections than its
role's bound (app/services/connections.py), and names its role in `application_name`, which
is what these tests count in `pg_stat_activity`."""

from __future__ import annotations

from collections import Counter
from typing import Any

import httpx
from sqlalchemy import text

from app.services import connections
from app.services.context import Context
from app.settings import Settings
from devtools.processes import start_app
from tests.fleet_support import FAST_RETRIES, all_done, submit
from tests.helpers import free_port, settings_env, terminate, wait_until

THREADS = 4


def connections_by_role(ctx: Context) -> Counter[str]:
    """Open connections to the test database, by application_name."""
    with ctx.db.transaction() as session:
        rows = session.execute(
            text(
                "SELECT application_name, count(*) FROM pg_stat_activity "
                "WHERE datname = current_database() AND application_name LIKE 'jobfleet-%' "
                "GROUP BY application_name"
            )
        ).all()
    return Counter({str(name): int(count) for name, count in rows})


class Peaks:
    """The most connections seen at once per role, over every look."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.most: Counter[str] = Counter()

    def look(self) -> Counter[str]:
        now = connections_by_role(self.ctx)
        for role, count in now.items():
            self.most[role] = max(self.most[role], count)
        return now


def test_a_worker_process_under_load_holds_at_most_its_loops_and_two(
    settings: Settings, ctx: Context, start_fleet: Any
) -> None:
    start_fleet(processes=1, threads=THREADS, **FAST_RETRIES)
    jobs = [submit(ctx, task="noop") for _ in range(300)]
    # Jobs long enough for leases to be renewed while held, retries, soft timeouts.
    jobs += [submit(ctx, task="sleep", payload={"seconds": 0.2}) for _ in range(12)]
    jobs += [submit(ctx, task="flaky", payload={"failures": 1}) for _ in range(20)]
    jobs += [
        submit(ctx, task="sleep", payload={"seconds": 30}, timeout_seconds=1, max_retries=0)
        for _ in range(THREADS)
    ]
    peaks = Peaks(ctx)

    def finished() -> bool:
        peaks.look()
        return all_done(ctx, len(jobs), done=("completed", "failed"))

    wait_until(finished, timeout=120, interval=0.01, what="every job finished")
    worker_bound = connections.worker(THREADS).most
    assert worker_bound == THREADS + 2
    # The loops did hold connections at once (the count is real), never more than the bound.
    assert 2 <= peaks.most["jobfleet-worker"] <= worker_bound, peaks.most
    assert 1 <= peaks.most["jobfleet-manager"] <= connections.manager(settings).most, peaks.most


def test_maintenance_starts_without_a_key_secret_and_keeps_to_its_pool(
    settings: Settings, ctx: Context
) -> None:
    env = settings_env(settings, ENVIRONMENT="production", API_KEY_SECRET="", **FAST_RETRIES)
    process = start_app(["maintenance"], env)
    try:
        peaks = Peaks(ctx)
        submit(ctx, task="noop", delay_seconds=0.01)  # work for its promoter
        wait_until(lambda: peaks.look()["jobfleet-maintenance"], timeout=30)
        assert process.poll() is None
        assert peaks.most["jobfleet-maintenance"] <= connections.maintenance().most
    finally:
        assert terminate(process, 30) == 0


def test_the_api_names_its_connections(settings: Settings, ctx: Context, start_api: Any) -> None:
    # Other API processes of the session (the live_api fixture) may hold connections to the
    # same database: count what this one adds.
    before = connections_by_role(ctx)
    metrics_port = free_port()
    api = start_api(API_METRICS_PORT=str(metrics_port))
    assert httpx.get(f"{api.url}/ready", timeout=10).status_code == 200
    assert httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).status_code == 200
    added = connections_by_role(ctx) - before
    assert 1 <= added["jobfleet-api"] <= connections.api(settings).most
    assert 1 <= added["jobfleet-api-metrics"] <= connections.api_metrics().most


def test_the_sizing_formula_of_the_operations_guide() -> None:
    # The worked example of docs/OPERATIONS.md: the compose defaults, one replica each.
    compose = Settings(api_workers=2, worker_processes=2, worker_threads=2)
    assert connections.api(compose).most == 15
    assert connections.manager(compose).most == 9
    assert connections.worker(2).most == 4
    assert (
        connections.deployment(compose, api_replicas=1, fleet_replicas=1)
        == 2 * 15 + 2 + 9 + 2 * 4 + 1 + 1
    )
    # Three fleet replicas fit Postgres's default max_connections (100, 3 reserved); a fourth
    # needs a larger one.
    assert connections.deployment(compose, api_replicas=1, fleet_replicas=3) == 85
    assert connections.deployment(compose, api_replicas=1, fleet_replicas=4) == 102
    # The listener's connection counts once, however many processes may listen.
    assert connections.deployment(compose, 1, 2) - connections.deployment(compose, 1, 1) == 17
    assert connections.deployment(compose, 1, 0, maintenance_processes=1) == 32 + 8 + 1 + 1
    # A manager that runs no duties needs only its own tick's connection and a spare.
    assert connections.manager(Settings(run_duties=False)).most == 2
