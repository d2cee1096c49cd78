"""Idempotency under real concurrency: threads against a real multi-process API."""

from __future__ import annotations

import threading
from typing import Any

import httpx
from sqlalchemy import text

from app.services.context import Context
from tests.helpers import LiveAPI


def test_fifty_concurrent_posts_with_one_key_create_one_job(
    live_api: LiveAPI, make_key: Any, ctx: Context
) -> None:
    headers = {"Authorization": f"Bearer {make_key('acme')}", "Idempotency-Key": "burst-1"}
    body = {"task": "echo", "payload": {"n": 1}}
    start = threading.Barrier(50)
    results: list[tuple[int, str]] = []
    lock = threading.Lock()

    def post() -> None:
        with httpx.Client(base_url=live_api.url, timeout=30) as http:
            start.wait()
            response = http.post("/jobs", json=body, headers=headers)
        with lock:
            results.append((response.status_code, response.json().get("id", "")))

    threads = [threading.Thread(target=post) for _ in range(50)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)

    statuses = sorted(status for status, _ in results)
    assert statuses == [200] * 49 + [201]
    assert len({job_id for _, job_id in results}) == 1
    with ctx.db.transaction() as session:
        assert session.scalar(text("SELECT count(*) FROM jobs")) == 1
    assert ctx.redis.client.llen(ctx.keys.ready("default", 0, "acme")) == 1


def test_concurrent_single_submits_of_two_tenants_each_commit_once(
    live_api: LiveAPI, make_key: Any, ctx: Context
) -> None:
    # Submits that arrive together share a commit; each must still get its own job, of its
    # own tenant, and a job with a reused key must come back as the same job.
    tenants = {name: {"Authorization": f"Bearer {make_key(name)}"} for name in ("acme", "globex")}
    start = threading.Barrier(40)
    results: list[tuple[str, int, int, str]] = []
    lock = threading.Lock()

    def post(tenant: str, thread: int) -> None:
        with httpx.Client(base_url=live_api.url, timeout=30) as http:
            start.wait()
            for n in range(10):
                body = {"task": "echo", "payload": {"thread": thread, "n": n}}
                if n == 0:
                    body["idempotency_key"] = f"{tenant}-shared"
                    body["payload"] = {"shared": True}
                response = http.post("/jobs", json=body, headers=tenants[tenant])
                with lock:
                    results.append((tenant, n, response.status_code, response.json()["id"]))

    threads = [
        threading.Thread(target=post, args=(tenant, i)) for i in range(20) for tenant in tenants
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)

    assert len(results) == 400
    for tenant in tenants:
        shared = [(status, job) for t, n, status, job in results if t == tenant and n == 0]
        assert sorted(status for status, _ in shared) == [200] * 19 + [201]
        assert len({job for _, job in shared}) == 1
        others = [status for t, n, status, _ in results if t == tenant and n > 0]
        assert others == [201] * 180
    with ctx.db.transaction() as session:
        counts = dict(session.execute(text("SELECT tenant, count(*) FROM jobs GROUP BY 1")).all())
    assert counts == {"acme": 181, "globex": 181}
    for tenant in tenants:
        assert ctx.redis.client.llen(ctx.keys.ready("default", 0, tenant)) == 181
