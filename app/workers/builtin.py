"""The built-in tasks: noop, echo, sleep, fail and flaky, and http (app/workers/http_task.py)."""

from __future__ import annotations

import time
from typing import Any

from app.settings import Settings
from app.workers.http_task import HttpTask
from app.workers.registry import JobContext, TaskFunction, task


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


def configured_tasks(settings: Settings) -> dict[str, TaskFunction]:
    """The built-in tasks that are built from the settings, by the process that runs them."""
    return {"http": HttpTask.from_settings(settings)}
