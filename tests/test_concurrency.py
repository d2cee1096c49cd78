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
    assert ctx.redis.client.llen(ctx.keys.ready("default", 0)) == 1
