"""Fault injection with real processes and real servers: each test runs a fleet over at least
1,000 jobs, breaks something in the middle of the run (worker children SIGKILLed, Redis flushed
or restarted empty, Postgres restarted, the API killed between its commit and its push, HTTP
workers that vanish or ack late), and then checks that every job completed exactly once.

Servers that a test stops, restarts or flushes are private ones (app.devstack) in tmp_path;
the shared Postgres and Redis are only ever used through the tests' database and key prefix.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from sqlalchemy import text

from app.devstack import PrivatePostgres, PrivateRedis
from app.dispatch import reconcile
from app.services import auth, execution
from app.services.context import Context
from app.services.maintenance import Reconciler
from app.settings import Settings
from app.store.admin import migrate
from tests.fleet_support import job_row, statuses, submit, workers_of
from tests.helpers import ROOT, LiveAPI, LiveFleet, free_port, settings_env, wait_until

pytestmark = pytest.mark.live

JOBS = 1000
# Fast heartbeats, leases (= heartbeat TTL), retries and duties, so that every fault heals
# within a few seconds.
FAST: dict[str, Any] = {
    "heartbeat_interval_seconds": 0.5,
    "heartbeat_ttl_seconds": 3,
    "retry_base": 1.5,
    "retry_cap": 0.5,
    "sweep_after_seconds": 1.0,
    "reconcile_interval_seconds": 0.2,
    "recovery_interval_seconds": 0.2,
    "promote_interval_seconds": 0.1,
}
RUN_TIMEOUT = 60.0


def fast(settings: Settings, **update: Any) -> Settings:
    return settings.model_copy(update={**FAST, **update})


def alive(fleet: LiveFleet) -> bool:
    """The manager is still running (a fault did not take it down)."""
    return fleet.process.poll() is None


# --- processes ---------------------------------------------------------------------------------


class Api(LiveAPI):
    """LiveAPI whose stderr goes to pytest's capture instead of a pipe nobody drains (a fault
    makes the API log a warning per request, which could fill the pipe and stall it)."""

    def __init__(self, settings: Settings, **overrides: str) -> None:
        self.port = free_port()
        env = settings_env(settings, API_PORT=str(self.port), API_WORKERS="1", **overrides)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "app", "api"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL
        )
        self.url = f"http://127.0.0.1:{self.port}"
        wait_until(self._healthy, timeout=30)


@dataclass
class Processes:
    """Fleets and APIs a test started; stopped at teardown, fleets first."""

    fleets: list[LiveFleet] = field(default_factory=list)
    apis: list[Api] = field(default_factory=list)

    def fleet(
        self,
        settings: Settings,
        ctx: Context,
        processes: int = 2,
        threads: int = 2,
        **overrides: str,
    ) -> LiveFleet:
        """Start a fleet and wait until its workers beat in `ctx`'s Redis."""
        started = LiveFleet(
            settings,
            processes,
            threads,
            # LiveFleet's own defaults are slower than the settings these tests want.
            HEARTBEAT_INTERVAL_SECONDS=str(settings.heartbeat_interval_seconds),
            HEARTBEAT_TTL_SECONDS=str(settings.heartbeat_ttl_seconds),
            **overrides,
        )
        self.fleets.append(started)
        wait_until(lambda: len(workers_of(ctx, started.host)) >= processes, timeout=60)
        return started

    def api(self, settings: Settings, **overrides: str) -> Api:
        started = Api(settings, **overrides)
        self.apis.append(started)
        return started

    def stop(self) -> None:
        try:
            for fleet in self.fleets:
                fleet.stop()
        finally:
            for api in self.apis:
                api.stop()


@pytest.fixture
def procs(ctx: Context) -> Iterator[Processes]:
    started = Processes()
    yield started
    started.stop()


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    server = PrivateRedis(tmp_path / "redis")
    server.start()
    yield server
    server.stop()


@pytest.fixture
def private_postgres() -> Iterator[PrivatePostgres]:
    # Not under tmp_path: as root, postgres runs as another user who must be able to reach the
    # data directory, and any pytest session that starts meanwhile resets
    # /tmp/pytest-of-<user> to 0700 (initdb or a restart would then fail on permissions).
    directory = Path(tempfile.mkdtemp(prefix="jobfleet-faults-"))
    server = PrivatePostgres(directory / "pg", fast=True)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(directory, ignore_errors=True)


class BlackHole:
    """A TCP server that accepts connections and never answers: a Redis that hangs forever."""

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.server.settimeout(0.1)
        self.port = int(self.server.getsockname()[1])
        self.accepted: list[socket.socket] = []
        self.closing = threading.Event()
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def _accept(self) -> None:
        while not self.closing.is_set():
            try:
                conn, _ = self.server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.accepted.append(conn)

    def close(self) -> None:
        self.closing.set()
        self.thread.join(5)
        self.server.close()
        for conn in self.accepted:
            conn.close()


# --- jobs and the exactly-once check ------------------------------------------------------------


def prime(ctx: Context) -> None:
    """What a fleet's reconciler does first on a fresh Redis: write the epoch key (a rebuild of
    nothing). Done before jobs are submitted, so that a fleet started later does not rebuild
    (and push every queued id a second time) and the backlog it finds is the submitter's."""
    assert reconcile.epoch_present(ctx.redis.client, ctx.keys) is False
    Reconciler(ctx).run_once(time.time())
    assert reconcile.epoch_present(ctx.redis.client, ctx.keys)


def submit_many(ctx: Context, count: int, seconds: float, **payload: Any) -> list[str]:
    return [submit(ctx, payload={"seconds": seconds, **payload}) for _ in range(count)]


def completed(ctx: Context) -> int:
    return statuses(ctx).get("completed", 0)


def counter_key(settings: Settings) -> str:
    """The `count` task's side-effect hash (tests/fleet_tasks.py)."""
    return f"{settings.key_prefix}:test:runs"


@dataclass(frozen=True)
class JobRecord:
    status: str
    attempts: int
    outcomes: list[str]
    workers: list[str]
    result: Any
    runs: int


def assert_completed_exactly_once(
    ctx: Context, expected: set[str], counter: redis.Redis, key: str
) -> dict[str, JobRecord]:
    """Every job is one of `expected` and completed, with exactly one `completed` attempt,
    one attempt row per started attempt, nothing but completed/lost/timeout outcomes, and a
    side-effect count between 1 and its number of attempts (exactly 1 when no attempt was
    lost or timed out). Returns what it read, by job id."""
    with ctx.db.transaction() as session:
        rows = session.execute(
            text(
                """
                SELECT j.id::text AS id, j.status, j.attempts, j.result,
                       coalesce(array_agg(a.outcome::text ORDER BY a.attempt, a.id)
                                FILTER (WHERE a.id IS NOT NULL), '{}') AS outcomes,
                       coalesce(array_agg(coalesce(a.worker_id, '')::text
                                          ORDER BY a.attempt, a.id)
                                FILTER (WHERE a.id IS NOT NULL), '{}') AS workers
                  FROM jobs j LEFT JOIN job_attempts a ON a.job_id = j.id
                 GROUP BY j.id
                """
            )
        ).all()
    runs = {k.decode(): int(v) for k, v in counter.hgetall(key).items()}
    records = {
        r.id: JobRecord(
            r.status, r.attempts, list(r.outcomes), list(r.workers), r.result, runs.get(r.id, 0)
        )
        for r in rows
    }
    assert set(records) == expected, (
        f"{len(set(records) - expected)} unexpected and {len(expected - set(records))} missing jobs"
    )
    assert set(runs) <= expected, "side effects of jobs that do not exist"
    problems = []
    for job_id, rec in records.items():
        why = []
        if rec.status != "completed":
            why.append(f"status {rec.status}")
        if rec.outcomes.count("completed") != 1:
            why.append("completed attempts != 1")
        if not set(rec.outcomes) <= {"completed", "lost", "timeout"}:
            why.append("unexpected outcome")
        if rec.attempts != len(rec.outcomes):
            why.append("attempts counter != attempt rows")
        if not 1 <= rec.runs <= len(rec.outcomes):
            why.append("side effects outside 1..attempts")
        if not {"lost", "timeout"} & set(rec.outcomes) and rec.runs != 1:
            why.append("ran more than once without a lost attempt")
        if why:
            problems.append(f"{job_id}: {', '.join(why)}: {rec}")
    assert not problems, f"{len(problems)} bad jobs, first ones:\n" + "\n".join(problems[:10])
    return records


def parent_pid(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat[stat.rindex(")") + 2 :].split()[1])


# --- 1. worker children SIGKILLed ---------------------------------------------------------------


def test_sigkilled_busy_children_lose_no_job_and_run_none_twice(
    ctx: Context, procs: Processes
) -> None:
    settings = fast(ctx.settings)
    prime(ctx)
    ids = submit_many(ctx, JOBS, seconds=0.05)
    fleet = procs.fleet(settings, ctx, processes=3, threads=2)
    killed: dict[str, int] = {}

    def busy_victim() -> dict[str, Any] | bool:
        for beat in workers_of(ctx, fleet.host):
            if beat["current_jobs"] and beat["worker_id"] not in killed:
                return beat
        return completed(ctx) == JOBS  # stop waiting: the run is over

    for _ in range(5):
        victim = wait_until(busy_victim, timeout=30)
        assert isinstance(victim, dict), "the run ended before every kill was made"
        done_before = completed(ctx)
        # Only ever a child of our own manager.
        assert parent_pid(victim["pid"]) == fleet.process.pid
        os.kill(victim["pid"], signal.SIGKILL)
        killed[victim["worker_id"]] = victim["pid"]
        # Space the kills: wait for the fleet to make progress (or finish).
        wait_until(lambda b=done_before: completed(ctx) >= min(JOBS, b + 60), timeout=30)

    wait_until(lambda: completed(ctx) == JOBS, timeout=RUN_TIMEOUT, interval=0.2)
    assert alive(fleet)
    records = assert_completed_exactly_once(ctx, set(ids), ctx.redis.client, counter_key(settings))
    lost = {
        job_id: rec for job_id, rec in records.items() if set(rec.outcomes) & {"lost", "timeout"}
    }
    # The victims were busy: their jobs show up as lost attempts of exactly those processes,
    # and were run again to completion by another one.
    assert lost
    for rec in lost.values():
        assert rec.outcomes[-1] == "completed"
        losers = {w for w, o in zip(rec.workers, rec.outcomes, strict=True) if o == "lost"}
        assert losers <= set(killed)
        assert rec.workers[-1] not in losers
    # The manager replaced every killed child.
    wait_until(
        lambda: (
            len(beats := workers_of(ctx, fleet.host)) == 3
            and not {b["pid"] for b in beats} & set(killed.values())
        ),
        timeout=30,
    )


# --- 2 and 3. Redis loses everything ------------------------------------------------------------


def _redis_loss_run(
    ctx: Context,
    procs: Processes,
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
        fleet = procs.fleet(
            settings, dispatch, processes=2, threads=2, COUNTER_REDIS_URL=ctx.settings.redis_url
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
        wait_until(lambda: completed(ctx) == JOBS, timeout=RUN_TIMEOUT, interval=0.2)
        assert alive(fleet)
        assert_completed_exactly_once(ctx, set(ids), ctx.redis.client, counter_key(settings))
        # Nothing is left waiting in Redis but ids whose jobs already ran (harmless duplicates
        # the claim skips), and the fleet still beats into the new Redis.
        wait_until(lambda: dispatch.redis.client.llen(ready) == 0, timeout=30)
        wait_until(lambda: len(workers_of(dispatch, fleet.host)) == 2, timeout=30)
    finally:
        dispatch.close()


def test_redis_flushall_mid_run_is_rebuilt_from_postgres(
    ctx: Context, private_redis: PrivateRedis, procs: Processes
) -> None:
    def flushall(dispatch: Context) -> None:
        dispatch.redis.client.flushall()

    _redis_loss_run(ctx, procs, private_redis, flushall)


def test_redis_restarted_empty_mid_run_is_rebuilt_from_postgres(
    ctx: Context, private_redis: PrivateRedis, procs: Processes
) -> None:
    def restart_empty(dispatch: Context) -> None:
        before = dispatch.redis.client.info("server")["run_id"]
        private_redis.stop()
        # While Redis is away nothing new starts, and what was running finishes: no job is
        # left processing with nobody to finish it.
        wait_until(lambda: statuses(ctx).get("processing", 0) == 0, timeout=30)
        private_redis.start()
        assert dispatch.redis.client.info("server")["run_id"] != before

    _redis_loss_run(ctx, procs, private_redis, restart_empty)


# --- 4. Postgres restarted ---------------------------------------------------------------------


def test_postgres_restart_mid_run_gives_503_then_recovers(
    ctx: Context, private_postgres: PrivatePostgres, procs: Processes
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
        api = procs.api(settings)
        prime(pg)
        ids = submit_many(pg, JOBS, seconds=0.01)
        fleet = procs.fleet(settings, pg, processes=2, threads=2)
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

        wait_until(lambda: completed(pg) == len(ids), timeout=RUN_TIMEOUT, interval=0.2)
        assert alive(fleet)
        assert_completed_exactly_once(pg, set(ids), ctx.redis.client, counter_key(settings))
    finally:
        pg.close()


# --- 5. the API killed between its commit and its push ----------------------------------------


def test_api_killed_between_commit_and_push_strands_nothing(
    ctx: Context, procs: Processes, make_key: Callable[..., str]
) -> None:
    settings = fast(ctx.settings)
    prime(ctx)
    normal = submit_many(ctx, JOBS, seconds=0.005)

    hole = BlackHole()
    try:
        api = procs.api(settings, REDIS_URL=hole.url, RATE_LIMIT_ENABLED="false")
        headers = {"Authorization": f"Bearer {make_key('acme', 'producer')}"}
        outcomes: list[object] = []

        def post() -> None:
            try:
                outcomes.append(
                    httpx.post(
                        f"{api.url}/jobs",
                        json={"task": "count", "payload": {"seconds": 0, "stranded": True}},
                        headers=headers,
                        timeout=120,
                    )
                )
            except httpx.TransportError as exc:
                outcomes.append(exc)

        posters = [threading.Thread(target=post) for _ in range(40)]
        for thread in posters:
            thread.start()

        def stranded() -> list[str]:
            with ctx.db.transaction() as session:
                return [
                    str(i)
                    for i in session.scalars(
                        text("SELECT id FROM jobs WHERE payload ? 'stranded'")
                    ).all()
                ]

        wait_until(lambda: len(stranded()) == 40, timeout=30)
        api.process.kill()
        api.process.wait()
        for thread in posters:
            thread.join(30)
        # Every request was committed; those still waiting on the push when the API died got
        # no answer at all. (On a loaded machine the first ones may have given up on Redis
        # after its 5 s socket timeout and answered 201 before the kill: their push failed
        # just the same.)
        assert len(outcomes) == 40
        killed_midway = [o for o in outcomes if isinstance(o, httpx.TransportError)]
        answered = [o for o in outcomes if isinstance(o, httpx.Response)]
        assert killed_midway
        assert {r.status_code for r in answered} <= {201}
        assert hole.accepted  # the API did try to reach its (hanging) Redis
    finally:
        hole.close()

    lost = set(stranded())
    assert len(lost) == 40
    # No fleet runs yet, so nothing can have pushed them: they are queued and not in Redis.
    in_redis = {
        i.decode() for i in ctx.redis.client.lrange(ctx.keys.ready("default", 0, "acme"), 0, -1)
    }
    assert len(in_redis) == JOBS
    assert not lost & in_redis
    assert {job_row(ctx, j).status for j in lost} == {"queued"}

    fleet = procs.fleet(settings, ctx, processes=2, threads=2)
    wait_until(lambda: completed(ctx) == JOBS + 40, timeout=RUN_TIMEOUT, interval=0.2)
    assert alive(fleet)
    records = assert_completed_exactly_once(
        ctx, set(normal) | lost, ctx.redis.client, counter_key(settings)
    )
    assert all(records[j].outcomes == ["completed"] for j in lost)


# --- 6. HTTP workers that vanish or ack late --------------------------------------------------


def test_http_workers_that_vanish_or_ack_late_change_nothing(
    ctx: Context, procs: Processes, make_key: Callable[..., str]
) -> None:
    settings = fast(ctx.settings)
    api = procs.api(settings)
    prime(ctx)
    ids = submit_many(ctx, JOBS, seconds=0.005)
    headers = {"Authorization": f"Bearer {make_key('acme', 'worker')}"}
    with httpx.Client(base_url=api.url, headers=headers, timeout=15) as http:

        def lease(worker_id: str) -> dict[str, Any]:
            response = http.post(
                "/queues/default/lease", json={"worker_id": worker_id, "lease_seconds": 1}
            )
            assert response.status_code == 200, response.text
            return dict(response.json())

        vanished = [lease("vanisher") for _ in range(20)]
        late = lease("latecomer")
        late_id = late["job"]["id"]
        assert late["job"]["status"] == "processing"

        fleet = procs.fleet(settings, ctx, processes=2, threads=2)
        # The late worker's lease expired, the job was recovered and run by the fleet ...
        wait_until(lambda: job_row(ctx, late_id).status == "completed", timeout=RUN_TIMEOUT)
        body = {"lease_token": late["lease_token"]}
        # ... so its ack, nack and heartbeat are refused: 409 lease-lost.
        for path, extra in [
            ("ack", {"result": {"from": "the late worker"}}),
            ("nack", {"error": "late"}),
            ("heartbeat", {"lease_seconds": 30}),
        ]:
            response = http.post(f"/jobs/{late_id}/{path}", json={**body, **extra})
            assert response.status_code == 409, (path, response.text)
            assert response.headers["content-type"].startswith("application/problem+json")
            assert response.json()["code"] == "lease-lost"

    wait_until(lambda: completed(ctx) == JOBS, timeout=RUN_TIMEOUT, interval=0.2)
    assert alive(fleet)
    records = assert_completed_exactly_once(ctx, set(ids), ctx.redis.client, counter_key(settings))
    late_record = records[late_id]
    assert late_record.outcomes == ["lost", "completed"]
    assert late_record.workers[0] == "http:latecomer"
    assert late_record.workers[1].startswith(fleet.host)
    assert late_record.result == {"runs": 1}  # the fleet's result, not the late worker's
    for leased in vanished:
        rec = records[leased["job"]["id"]]
        assert rec.outcomes == ["lost", "completed"]
        assert rec.workers[0] == "http:vanisher"
        assert rec.workers[1].startswith(fleet.host)
        assert rec.runs == 1
