"""Faults of the API: it is killed between its commit and its push to Redis (its Redis hangs),
so committed jobs are in no Redis list; the reconciler's sweep finds them and every job still
completes exactly once (tests/fault_support.py)."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable

import httpx
import pytest
from sqlalchemy import text

from app.services.context import Context
from tests.fault_support import JOBS, fast, prime, run_to_the_end, submit_many
from tests.fleet_support import job_row
from tests.helpers import HEAVY, LiveAPI, LiveFleet, wait_until

pytestmark = [pytest.mark.live, HEAVY, pytest.mark.usefixtures("untraced")]


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


# --- 5. the API killed between its commit and its push ----------------------------------------


def test_api_killed_between_commit_and_push_strands_nothing(
    ctx: Context,
    make_key: Callable[..., str],
    start_api: Callable[..., LiveAPI],
    start_fleet: Callable[..., LiveFleet],
) -> None:
    settings = fast(ctx.settings)
    prime(ctx)
    normal = submit_many(ctx, JOBS, seconds=0.005)

    hole = BlackHole()
    try:
        api = start_api(settings, REDIS_URL=hole.url, RATE_LIMIT_ENABLED="false")
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

    fleet = start_fleet(2, 2, on=settings)
    records = run_to_the_end(ctx, fleet, set(normal) | lost)
    assert all(records[j].outcomes == ["completed"] for j in lost)
