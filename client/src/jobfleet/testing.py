"""Test helpers for applications that use the Jobfleet client: a FakeClient that answers in
memory, so an application's tests run without a Jobfleet server, and records what was
submitted.

    from jobfleet.testing import FakeClient

    def test_signup_sends_a_welcome_mail() -> None:
        jobs = FakeClient()
        signup(jobs, "a@example.com")                    # the code under test calls jobs.submit
        jobs.assert_submitted("send_email", {"to": "a@example.com"}, queue="mail")

FakeClient is a Client (and AsyncFakeClient an AsyncClient) whose requests go to an in-memory
stand-in of the API instead of the network: the same methods, the same results and errors,
idempotency keys included. It serves the producer's calls (submit, submit_many, get, list,
iterate, cancel, retry, delete, wait); nothing runs the jobs, so a test finishes one itself with
`complete(id, result)` or `fail(id, error)`. `wait` on a job that is still waiting raises
WaitTimeout at once: no worker would ever finish it.
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from jobfleet.client import AsyncClient, Client
from jobfleet.errors import WaitTimeout
from jobfleet.models import ACTIVE, Job

__all__ = ["AsyncFakeClient", "FakeAPI", "FakeClient"]

_FIELDS = {
    "task",
    "payload",
    "queue",
    "priority",
    "idempotency_key",
    "run_at",
    "delay_seconds",
    "max_retries",
    "timeout_seconds",
}
# The filters of GET /jobs the fake applies: equality with the job's field.
_FILTERS = frozenset({"status", "queue", "task", "id", "idempotency_key"})
_NAME = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")
_QUEUE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_JOB_PATH = re.compile(r"^/jobs/(?P<id>[^/]+)(?:/(?P<action>cancel|retry))?$")
# Options whose name on a Job differs from the submit option.
_ALIASES = {"timeout": "timeout_seconds"}


def _now() -> datetime:
    return datetime.now(UTC)


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat().replace("+00:00", "Z")


def _problem(status: int, code: str, detail: str, **extra: Any) -> httpx.Response:
    body = {
        "type": f"urn:jobfleet:problem:{code}",
        "title": code.replace("-", " ").capitalize(),
        "status": status,
        "detail": detail,
        "code": code,
        **extra,
    }
    return httpx.Response(status, json=body, headers={"Content-Type": "application/problem+json"})


class _Invalid(Exception):
    def __init__(self, errors: list[dict[str, Any]]) -> None:
        super().__init__(errors)
        self.errors = errors


class FakeAPI:
    """The jobs of a FakeClient, in memory, behind the API's routes for producers. Its
    `handle` is an httpx.MockTransport handler."""

    def __init__(self, tenant: str = "test") -> None:
        self.tenant = tenant
        #: Every job created, oldest first.
        self.jobs: dict[str, dict[str, Any]] = {}
        self._keys: dict[str, tuple[str, str]] = {}

    # -- the routes ---------------------------------------------------------------------------

    def handle(self, request: httpx.Request) -> httpx.Response:
        path, method = request.url.path, request.method
        try:
            if path == "/jobs" and method == "POST":
                return self._submit_one(json.loads(request.content))
            if path == "/jobs/batch" and method == "POST":
                return self._submit_batch(json.loads(request.content))
            if path == "/jobs" and method == "GET":
                return self._list(dict(request.url.params))
            matched = _JOB_PATH.match(path)
            if matched and matched["id"] in self.jobs:
                return self._job_route(matched["id"], matched["action"], method)
            if matched:
                return _problem(404, "job-not-found", "No job with this id for this tenant.")
        except _Invalid as invalid:
            return self._invalid(invalid.errors)
        except _Conflict as conflict:
            return conflict.response
        return _problem(404, "not-found", f"the fake API does not serve {method} {path}")

    def _submit_one(self, body: Any) -> httpx.Response:
        status, job = self._create(body, ["body"])
        return httpx.Response(status, json=self._public(job))

    def _submit_batch(self, body: Any) -> httpx.Response:
        jobs = body.get("jobs") if isinstance(body, dict) else None
        if not isinstance(jobs, list) or not 1 <= len(jobs) <= 1000:
            raise _Invalid([_error(["body", "jobs"], "1 to 1,000 jobs", "value_error")])
        results, created = [], 0
        for index, item in enumerate(jobs):
            try:
                status, job = self._create(item, ["body", "jobs", index])
            except _Invalid as invalid:
                problem = json.loads(self._invalid(invalid.errors).content)
                results.append({"status": 422, "id": None, "job_status": None, "problem": problem})
                continue
            except _Conflict as conflict:
                problem = json.loads(conflict.response.content)
                results.append({"status": 409, "id": None, "job_status": None, "problem": problem})
                continue
            created += status == 201
            results.append(
                {"status": status, "id": job["id"], "job_status": job["status"], "problem": None}
            )
        return httpx.Response(200, json={"results": results, "created": created})

    def _list(self, params: dict[str, str]) -> httpx.Response:
        unknown = sorted(set(params) - _FILTERS - {"limit", "cursor", "offset"})
        if unknown:
            # A filter the fake would ignore would pass a test the real API would fail.
            detail = f"the fake API does not filter by {', '.join(unknown)}"
            return _problem(422, "validation-error", detail, errors=[])
        limit = int(params.get("limit", 20))
        start = int(params.get("cursor") or params.get("offset") or 0)
        chosen = [
            job
            for job in reversed(self.jobs.values())
            if all(job[name] == params[name] for name in _FILTERS & set(params))
        ]
        page = chosen[start : start + limit]
        more = start + limit < len(chosen)
        return httpx.Response(
            200,
            json={
                "items": [self._public(job) for job in page],
                "total": len(chosen),
                "total_exact": True,
                "limit": limit,
                "offset": start,
                "next_cursor": str(start + limit) if more else None,
            },
        )

    def _job_route(self, job_id: str, action: str | None, method: str) -> httpx.Response:
        job = self.jobs[job_id]
        if action is None and method == "GET":
            return httpx.Response(200, json=self._public(job, history=True))
        if action is None and method == "DELETE":
            if job["status"] == "processing":
                return self._state(job)
            del self.jobs[job_id]
            return httpx.Response(204)
        if action == "cancel" and method == "POST":
            if job["status"] not in ("queued", "scheduled"):
                return self._state(job)
            self._move(job, "cancelled", finished=True)
            return httpx.Response(200, json=self._public(job))
        if action == "retry" and method == "POST":
            if job["status"] not in ("failed", "cancelled"):
                return self._state(job)
            self._move(job, "queued", attempts=0, result=None, last_error=None, finished_at=None)
            return httpx.Response(200, json=self._public(job))
        return _problem(405, "method-not-allowed", f"{method} is not allowed here")

    # -- what the routes share ----------------------------------------------------------------

    def _create(self, body: Any, loc: list[Any]) -> tuple[int, dict[str, Any]]:
        fields = self._validate(body, loc)
        key = fields.pop("idempotency_key", None)
        fingerprint = hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()
        if key is not None and key in self._keys:
            job_id, seen = self._keys[key]
            if seen != fingerprint:
                raise _Conflict(job_id, key)
            return 200, self.jobs[job_id]
        now = _now()
        run_at = now
        if "delay_seconds" in fields:
            run_at = now + timedelta(seconds=fields["delay_seconds"])
        elif "run_at" in fields:
            run_at = max(now, datetime.fromisoformat(fields["run_at"]).astimezone(UTC))
        job = {
            "id": str(uuid.uuid4()),
            "tenant": self.tenant,
            "queue": fields.get("queue", "default"),
            "task": fields["task"],
            "payload": fields.get("payload", {}),
            "priority": fields.get("priority", 0),
            "status": "scheduled" if run_at > now else "queued",
            "idempotency_key": key,
            "attempts": 0,
            "max_retries": fields.get("max_retries", 3),
            "timeout_seconds": fields.get("timeout_seconds", 300),
            "run_at": _iso(run_at),
            "result": None,
            "last_error": None,
            "worker_id": None,
            "cancel_requested": False,
            "created_at": _iso(now),
            "updated_at": _iso(now),
            "started_at": None,
            "finished_at": None,
        }
        self.jobs[job["id"]] = job
        if key is not None:
            self._keys[key] = (job["id"], fingerprint)
        return 201, job

    def _validate(self, body: Any, loc: list[Any]) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise _Invalid([_error(loc, "Input should be a valid dictionary", "dict_type")])
        errors = [
            _error([*loc, name], "Extra inputs are not permitted", "extra_forbidden")
            for name in body
            if name not in _FIELDS
        ]
        checks: list[tuple[str, Callable[[Any], bool], str]] = [
            ("task", lambda v: isinstance(v, str) and bool(_NAME.match(v)), "a task name"),
            ("queue", lambda v: isinstance(v, str) and bool(_QUEUE.match(v)), "a queue name"),
            ("priority", lambda v: _int(v) and 0 <= v <= 9, "an integer 0..9"),
            ("max_retries", lambda v: _int(v) and 0 <= v <= 100, "an integer 0..100"),
            ("timeout_seconds", lambda v: _int(v) and v >= 1, "an integer of at least 1"),
        ]
        if "task" not in body:
            errors.append(_error([*loc, "task"], "Field required", "missing"))
        for name, valid, expected in checks:
            if name in body and not valid(body[name]):
                errors.append(_error([*loc, name], f"Input should be {expected}", "value_error"))
        if "run_at" in body and "delay_seconds" in body:
            errors.append(_error(loc, "run_at and delay_seconds exclude each other", "value_error"))
        if errors:
            raise _Invalid(errors)
        return dict(body)

    def _invalid(self, errors: list[dict[str, Any]]) -> httpx.Response:
        detail = ", ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in errors)
        return _problem(422, "validation-error", detail, errors=errors)

    def _state(self, job: dict[str, Any]) -> httpx.Response:
        detail = f"not allowed while the job is {job['status']}"
        return _problem(409, "invalid-state", detail, job_status=job["status"])

    def _move(
        self, job: dict[str, Any], status: str, finished: bool = False, **fields: Any
    ) -> None:
        now = _iso(_now())
        job.update(status=status, updated_at=now, **fields)
        if finished:
            job["finished_at"] = now

    def _public(self, job: dict[str, Any], history: bool = False) -> dict[str, Any]:
        return {**job, "history": []} if history else dict(job)


class _Conflict(Exception):
    def __init__(self, job_id: str, key: str) -> None:
        super().__init__(job_id)
        detail = f"idempotency key {key!r} was used for a different request (job {job_id})"
        self.response = _problem(409, "idempotency-conflict", detail, job_id=job_id)


def _error(loc: list[Any], msg: str, kind: str) -> dict[str, Any]:
    return {"loc": loc, "msg": msg, "type": kind}


def _int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


class _Recorder:
    """What FakeClient and AsyncFakeClient add to their client: the submitted jobs, the
    assertions on them, and finishing a job as a worker would."""

    api: FakeAPI

    @property
    def submitted(self) -> list[Job]:
        """Every job created so far, oldest first, as it is now."""
        return [Job.from_json(job) for job in self.api.jobs.values()]

    def assert_submitted(self, task: str, payload: Any = ..., **fields: Any) -> Job:
        """The job of `task` that was submitted with this payload (when given; unittest.mock.ANY
        and other objects comparing equal work) and these fields (queue, priority,
        idempotency_key, max_retries, timeout or timeout_seconds, ...). Fails with the list of
        what was submitted when none matches."""
        wanted = {"task": task, **({} if payload is ... else {"payload": payload})}
        wanted.update({_ALIASES.get(name, name): value for name, value in fields.items()})
        for job in self.api.jobs.values():
            if all(name in job and value == job[name] for name, value in wanted.items()):
                return Job.from_json(job)
        seen = "\n".join(
            f"  {job['task']} {json.dumps(job['payload'])} queue={job['queue']}"
            for job in self.api.jobs.values()
        )
        shown = ", ".join(f"{name}={value!r}" for name, value in wanted.items())
        raise AssertionError(f"no job submitted with {shown}; submitted:\n{seen or '  nothing'}")

    def assert_not_submitted(self, task: str | None = None) -> None:
        """No job was submitted (of `task`, when given)."""
        found = [job for job in self.api.jobs.values() if task is None or job["task"] == task]
        assert not found, f"{len(found)} job(s) submitted: {[job['task'] for job in found]}"

    def complete(self, job_id: str, result: Any = None) -> Job:
        """Finish a job as a worker would have: `completed` with this result."""
        return self._finish(job_id, "completed", result=result)

    def fail(self, job_id: str, error: str = "failed") -> Job:
        """Fail a job for good, as after its last retry: `failed` with this error."""
        return self._finish(job_id, "failed", last_error=error)

    def _finish(self, job_id: str, status: str, **fields: Any) -> Job:
        job = self.api.jobs[job_id]
        self.api._move(job, status, finished=True, attempts=job["attempts"] + 1, **fields)
        return Job.from_json(job)

    def _check_waitable(self, job_id: str, timeout: float | None) -> None:
        job = self.api.jobs.get(job_id)
        if job is not None and job["status"] in ACTIVE:
            # Nothing runs the fake's jobs: waiting could only end in a timeout.
            raise WaitTimeout(job_id, timeout or 0.0, Job.from_json(job))


class FakeClient(_Recorder, Client):
    """A Client whose API is in memory (see the module's docstring)."""

    def __init__(self, tenant: str = "test", api: FakeAPI | None = None) -> None:
        self.api = api or FakeAPI(tenant)
        super().__init__(
            "http://jobfleet.invalid", "jf_fake", transport=httpx.MockTransport(self.api.handle)
        )

    def wait(self, job_id: str, timeout: float | None = None, *, poll: float = 1.0) -> Job:
        self._check_waitable(job_id, timeout)
        return super().wait(job_id, timeout, poll=poll)


class AsyncFakeClient(_Recorder, AsyncClient):
    """An AsyncClient whose API is in memory (see the module's docstring)."""

    def __init__(self, tenant: str = "test", api: FakeAPI | None = None) -> None:
        self.api = api or FakeAPI(tenant)
        super().__init__(
            "http://jobfleet.invalid", "jf_fake", transport=httpx.MockTransport(self.api.handle)
        )

    async def wait(self, job_id: str, timeout: float | None = None, *, poll: float = 1.0) -> Job:
        self._check_waitable(job_id, timeout)
        return await super().wait(job_id, timeout, poll=poll)


def submitted_tasks(client: _Recorder) -> list[str]:
    """The task names submitted to a fake client, in order (a short form for assertions)."""
    return [job["task"] for job in client.api.jobs.values()]
