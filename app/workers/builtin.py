"""The built-in tasks: noop, echo, sleep, fail, flaky and http."""

from __future__ import annotations

import time
from typing import Any

import httpx

from app.workers.registry import JobContext, task


class TaskFailed(Exception):
    """A built-in task failed on purpose or because its target did."""


@task("noop")
def noop(payload: Any) -> None:
    return None


@task("echo")
def echo(payload: Any) -> Any:
    return payload


@task("sleep")
def sleep(payload: Any, job: JobContext) -> dict[str, float]:
    """Sleep `seconds` (default 1) in short steps, so a timeout or a cancel can stop it."""
    seconds = float(payload.get("seconds", 1)) if isinstance(payload, dict) else 1.0
    until = time.monotonic() + seconds
    while (left := until - time.monotonic()) > 0:
        if job.cancel_event.wait(min(left, 0.05)):
            break
    return {"slept": seconds}


@task("fail")
def fail(payload: Any) -> None:
    message = payload.get("message", "fail task") if isinstance(payload, dict) else "fail task"
    raise TaskFailed(str(message))


@task("flaky")
def flaky(payload: Any, job: JobContext) -> dict[str, int]:
    """Fail the first `failures` attempts (default 2), then succeed."""
    failures = int(payload.get("failures", 2)) if isinstance(payload, dict) else 2
    if job.attempt <= failures:
        raise TaskFailed(f"flaky failure {job.attempt} of {failures}")
    return {"attempt": job.attempt}


@task("http")
def http(payload: Any, job: JobContext) -> dict[str, Any]:
    """Call payload.url with payload.method (POST), headers, json and timeout (10 s).

    A status outside 2xx is a failure; the reply's status and body (JSON when it parses,
    else text) are the result.
    """
    if not isinstance(payload, dict) or not isinstance(payload.get("url"), str):
        raise TaskFailed("http task needs a payload with a 'url'")
    timeout = min(float(payload.get("timeout", 10)), max(job.deadline - time.time(), 0.1))
    response = httpx.request(
        str(payload.get("method", "POST")).upper(),
        payload["url"],
        headers=payload.get("headers"),
        json=payload.get("json"),
        timeout=timeout,
    )
    if not response.is_success:
        raise TaskFailed(f"{response.request.method} {payload['url']} -> {response.status_code}")
    try:
        body: Any = response.json()
    except ValueError:
        body = response.text
    return {"status": response.status_code, "body": body}
