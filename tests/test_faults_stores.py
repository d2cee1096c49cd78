"""Faults of the stores: Redis loses everything mid-run (FLUSHALL, or a restart without
persistence) and the reconciler rebuilds it from Postgres; Postgres restarts mid-run and the API
answers 503 while it is away. Every job still completes exactly once (tests/fault_support.py).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx
import pytest

from app.services import auth, execution
from app.services.context import Context
from app.store.admin import migrate
from devtools.postgres_server import PrivatePostgres
from devtools.redis_server import PrivateRedis
from tests.fault_support import (
    JOBS,
    RUN_TIMEOUT,
    completed,
    fast,
    prime,
    run_to_the_end,
    submit_many,
)
from tests.fleet_support import statuses, workers_of
from tests.helpers import HEAVY, LiveAPI, LiveFleet, wait_until

pytestmark = [pytest.mark.live, HEAVY]


# --- 2 and 3. Redis loses everything ------------------------------------------------------------


def _redis_loss_run(
    ctx: Context,
    start_fleet: Callable[..., LiveFleet],
    private_redis: PrivateRedis,
    lose_everything: Callable[[Context], None],
) -> None:
    """A fleet and the submitter dispatch through `private_redis`; the side-effect counter
    lives in the shared Redis (under the tests' prefix), so it survives the loss."""
    settings = fast(ctx.settings, redis_url=private_redis.url)
    dispatch = Context(settings)
    try:
        prime(dispatch)
        ids = submit_many(dispatch, JOBS, seconds=0.01)
        fleet = start_fleet(
            2, 2, on=settings, within=dispatch, COUNTER_REDIS_URL=ctx.settings.redis_url
        )
        wait_until(lambda: completed(ctx) >= 150, timeout=RUN_TIMEOUT)
        ready = dispatch.keys.ready("default", 0, "acme")
        waiting = dispatch.redis.client.llen(ready)
        # The ids that are lost with Redis: hundreds of them are still waiting.
        assert waiting > 100
        assert completed(ctx) < JOBS

        lose_everything(dispatch)

        # The reconciler noticed (no epoch key) and rebuilt the lists from Postgres.
        wait_until(lambda: dispatch.redis.client.exists(dispatch.keys.epoch), timeout=30)
        run_to_the_end(ctx, fleet, set(ids))
        # Nothing is left waiting in Redis but ids whose jobs already ran (harmless duplicates
        # the claim skips), and the fleet still beats into the new Redis.
        wait_until(lambda: dispatch.redis.client.llen(ready) == 0, timeout=30)
        wait_until(lambda: len(workers_of(dispatch, fleet.host)) == 2, timeout=30)
    finally:
        dispatch.close()


def test_redis_flushall_mid_run_is_rebuilt_from_postgres(
    ctx: Context, private_redis: PrivateRedis, start_fleet: Callable[..., LiveFleet]
) -> None:
    def flushall(dispatch: Context) -> None:
        dispatch.redis.client.flushall()

    _redis_loss_run(ctx, start_fleet, private_redis, flushall)


def test_redis_restarted_empty_mid_run_is_rebuilt_from_postgres(
    ctx: Context, private_redis: PrivateRedis, start_fleet: Callable[..., LiveFleet]
) -> None:
    def restart_empty(dispatch: Context) -> None:
        before = dispatch.redis.client.info("server")["run_id"]
        private_redis.stop()
        # While Redis is away nothing new starts, and what was running finishes: no job is
        # left processing with nobody to finish it.
        wait_until(lambda: statuses(ctx).get("processing", 0) == 0, timeout=30)
        private_redis.start()
        assert dispatch.redis.client.info("server")["run_id"] != before

    _redis_loss_run(ctx, start_fleet, private_redis, restart_empty)


# --- 4. Postgres restarted ---------------------------------------------------------------------


def test_postgres_restart_mid_run_gives_503_then_recovers(
    ctx: Context,
    private_postgres: PrivatePostgres,
    start_api: Callable[..., LiveAPI],
    start_fleet: Callable[..., LiveFleet],
) -> None:
    database_url = private_postgres.url.rsplit("/", 1)[0] + "/jobfleet_faults"
    migrate(database_url)
    # Its own key prefix (under the tests' one, so it is cleaned up with it).
    settings = fast(
        ctx.settings,
        database_url=database_url,
        key_prefix=f"{ctx.settings.key_prefix}:pg",
        rate_limit_enabled=False,
    )
    pg = Context(settings)
    try:
        _, key = auth.create_key(pg, "acme", [auth.Scope.PRODUCER])
        api = start_api(settings)
        prime(pg)
        ids = submit_many(pg, JOBS, seconds=0.01)
        fleet = start_fleet(2, 2, on=settings, within=pg)
        wait_until(lambda: completed(pg) >= 150, timeout=RUN_TIMEOUT)
        assert completed(pg) < JOBS

        headers = {"Authorization": f"Bearer {key}"}
        with httpx.Client(base_url=api.url, headers=headers, timeout=15) as http:
            assert http.get("/jobs", params={"limit": 1}).status_code == 200
            private_postgres.stop()
            # No lease can have been renewed since: each runs out within one lease length.
            leases_over = time.monotonic() + execution.lease_seconds(pg) + 0.5

            def unavailable(response: httpx.Response) -> bool:
                return (
                    response.status_code == 503
                    and response.headers["content-type"].startswith("application/problem+json")
                    and response.json()["code"] == "postgres-unavailable"
                    and response.headers.get("retry-after") == "1"
                )

            wait_until(
                lambda: unavailable(http.get("/jobs", params={"limit": 1})),
                timeout=30,
                interval=0.1,
            )
            assert unavailable(http.post("/jobs", json={"task": "count"}))
            # Keep Postgres away until the leases of the jobs the loops were finishing have run
            # out (recovery's business once it is back). Ids the loops pop meanwhile and cannot
            # claim go back to Redis.
            wait_until(lambda: time.monotonic() >= leases_over, timeout=30, interval=0.1)

            private_postgres.start()
            # The test's own pool: its connections died with the server; start afresh. (The
            # API and the fleet get no such help.)
            pg.db.dispose()
            wait_until(
                lambda: http.get("/jobs", params={"limit": 1}).status_code == 200,
                timeout=30,
                interval=0.1,
            )
            for _ in range(20):
                response = http.post("/jobs", json={"task": "count", "payload": {"seconds": 0}})
                assert response.status_code == 201, response.text
                ids.append(response.json()["id"])

        run_to_the_end(ctx, fleet, set(ids), rows=pg)
    finally:
        pg.close()
