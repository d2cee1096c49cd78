"""What the sync Client and the AsyncClient share: every call to the API written once, as a
generator that yields effects (send this request, sleep this long) and returns the parsed
reply. The clients only carry the effects out, one with httpx.Client and time.sleep, the other
with httpx.AsyncClient and asyncio.sleep, so requests, retries, parsing and waiting exist once.
"""

from __future__ import annotations

import email.utils
import json
import os
import random
import time
import uuid
from collections.abc import Callable, Generator, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar
from urllib.parse import quote

import httpx

from jobfleet.errors import (
    APIError,
    Conflict,
    JobFailed,
    PayloadTooLarge,
    TransportError,
    WaitTimeout,
    error_from_problem,
)
from jobfleet.models import (
    ACTIVE,
    BatchItem,
    BatchResult,
    DeadLetterQuery,
    Heartbeat,
    Job,
    JobSpec,
    Lease,
    Page,
    ReplayChoice,
    ReplayResult,
    Schedule,
    ScheduleChanges,
    SchedulePage,
    SubmitOptions,
    Submitted,
    parse_time,
)

T = TypeVar("T")

#: The most jobs one POST /jobs/batch takes.
BATCH_LIMIT = 1000
#: The largest page GET /jobs, GET /dlq and GET /schedules give.
PAGE_LIMIT = 100
DEFAULT_URL = "http://127.0.0.1:8000"
#: Replies of the API that say it applied nothing: over the rate limit, Postgres or Redis away.
NOT_APPLIED = frozenset({429, 503})
#: Replies of a proxy in front of the API that lost its connection to it: the request may or
#: may not have been applied, like a connection broken after sending.
GATEWAY_ERRORS = frozenset({502, 504})


@dataclass(frozen=True)
class Send:
    """Effect: send one HTTP request; the runner answers with the httpx.Response, or with the
    httpx.TransportError it raised (as a value: the retry policy decides what it means)."""

    method: str
    path: str
    params: Mapping[str, str] | None = None
    json: Any = None
    headers: Mapping[str, str] = field(default_factory=dict)
    #: Seconds added to the client's timeout (a long poll holds the reply that long).
    extra_timeout: float = 0.0


@dataclass(frozen=True)
class Sleep:
    """Effect: wait this many seconds; the runner answers None."""

    seconds: float


Effect = Send | Sleep
Program = Generator[Effect, Any, T]


@dataclass(frozen=True)
class RetryPolicy:
    """When and how long the client waits before sending a request again.

    A request is repeated after a reply of 429 (rate limited) or 503 (Postgres or Redis did not
    answer; nothing was changed), and after a connection that could not be made: in these
    cases the API did not apply it. After a connection that broke once the request was sent, or
    a 502 or 504 from a proxy in front of the API (the API may have applied it and only the
    reply was lost), only the calls whose repetition is harmless are repeated: reads, submits
    (they always carry an idempotency key), leases, acks, nacks, heartbeats, pauses, resumes,
    fleet sizes, schedule updates, and schedule creates (a repeat that meets its own first
    try's schedule returns it: Protocol.create_schedule). Cancel, retry, replay, delete and a
    schedule's run now are not: their error says it may have been applied
    (`TransportError.sent`, or the 502/504 APIError).

    The wait before retry n (1, 2, ...) is the reply's Retry-After, if any, plus a random share
    ("full jitter") of min(backoff_cap, backoff * 2 ** (n - 1)) seconds, so that many clients
    refused together do not come back together. A Retry-After longer than max_retry_after is
    not waited out: the error is raised at once.
    """

    retries: int = 5
    backoff: float = 0.1
    backoff_cap: float = 5.0
    max_retry_after: float = 60.0

    def delay(self, retry: int, retry_after: float | None, rand: random.Random) -> float | None:
        """Seconds to wait before retry number `retry`, or None to give up."""
        if retry > self.retries:
            return None
        if retry_after is not None and retry_after > self.max_retry_after:
            return None
        jitter = rand.uniform(0.0, min(self.backoff_cap, self.backoff * 2 ** (retry - 1)))
        return (retry_after or 0.0) + jitter


def retry_after_seconds(value: str | None, now: datetime | None = None) -> float | None:
    """The Retry-After header in seconds: delta-seconds, or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def problem_of(response: httpx.Response) -> dict[str, Any]:
    """The problem JSON of an error reply; one made up from the status when the body is not
    one (a proxy's HTML page, an empty body)."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and ("code" in body or "type" in body):
        return body
    return {
        "type": "about:blank",
        "title": response.reason_phrase or f"HTTP {response.status_code}",
        "status": response.status_code,
        "detail": response.text[:500] or response.reason_phrase,
        "code": "http-error",
    }


def error_of(response: httpx.Response) -> APIError:
    return error_from_problem(
        response.status_code,
        problem_of(response),
        response.headers.get("x-request-id"),
        retry_after_seconds(response.headers.get("retry-after")),
    )


def _sent(exc: httpx.TransportError) -> bool:
    """False when the request surely never left: no connection was made."""
    return not isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout)


def _maybe_applied(reply: httpx.Response | httpx.TransportError) -> bool:
    if isinstance(reply, httpx.TransportError):
        return _sent(reply)
    return reply.status_code in GATEWAY_ERRORS


def _seconds(value: float | timedelta) -> float:
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


def _instant(value: datetime | str) -> str:
    if isinstance(value, datetime):
        if value.tzinfo is None:
            # The API refuses a naive time; guessing the local zone would move the job.
            raise ValueError("run_at and created_after/before need a timezone-aware datetime")
        return value.isoformat()
    return value


def _path(*parts: str) -> str:
    return "/" + "/".join(quote(str(part), safe="") for part in parts)


def new_idempotency_key() -> str:
    """A key no other request can have: made by the client for a submit without one, so that
    the submit can be sent again after a lost reply without creating a second job."""
    return f"jf-client:{uuid.uuid4()}"


def job_body(
    task: str, payload: Any = None, options: Mapping[str, Any] | None = None
) -> tuple[dict[str, Any], bool]:
    """The POST /jobs body of a submit, and whether its idempotency key was generated. Takes
    the client's option names (delay, timeout) and the API's (delay_seconds, timeout_seconds)."""
    options = dict(options or {})
    body: dict[str, Any] = {"task": task}
    if payload is not None:
        body["payload"] = payload
    for name in ("queue", "priority", "max_retries"):
        if options.get(name) is not None:
            body[name] = options.pop(name)
        options.pop(name, None)
    delay = options.pop("delay", None)
    delay = options.pop("delay_seconds", None) if delay is None else delay
    if delay is not None:
        body["delay_seconds"] = _seconds(delay)
    run_at = options.pop("run_at", None)
    if run_at is not None:
        body["run_at"] = _instant(run_at)
    timeout = options.pop("timeout", None)
    timeout = options.pop("timeout_seconds", None) if timeout is None else timeout
    if timeout is not None:
        body["timeout_seconds"] = int(_seconds(timeout))
    key = options.pop("idempotency_key", None)
    if options:
        raise TypeError(f"unknown submit option(s): {', '.join(sorted(options))}")
    generated = key is None
    body["idempotency_key"] = new_idempotency_key() if key is None else key
    return body, generated


def _spec_body(spec: JobSpec | Mapping[str, Any]) -> tuple[dict[str, Any], bool]:
    fields = dict(spec)
    if "task" not in fields:
        raise TypeError("every job of submit_many needs a 'task'")
    task = fields.pop("task")
    payload = fields.pop("payload", None)
    return job_body(task, payload, fields)


def _filter_params(filters: Mapping[str, Any]) -> dict[str, str]:
    params: dict[str, str] = {}
    for name, value in filters.items():
        if value is None:
            continue
        if isinstance(value, datetime):
            params[name] = _instant(value)
        elif name == "payload" and not isinstance(value, str):
            params[name] = json.dumps(value, separators=(",", ":"))
        else:
            params[name] = str(value)
    return params


#: What POST /schedules sets a field to when the body leaves it out (docs/API.md).
SCHEDULE_DEFAULTS: dict[str, Any] = {
    "timezone": "UTC",
    "payload": {},
    "queue": "default",
    "priority": 0,
    "max_retries": None,
    "timeout_seconds": None,
    "enabled": True,
    "misfire_policy": "run_latest",
}
_SCHEDULE_FIELDS = (
    "name",
    "cron",
    "timezone",
    "task",
    "payload",
    "queue",
    "priority",
    "max_retries",
    "timeout_seconds",
    "misfire_policy",
)


def schedule_body(
    name: str, cron: str, task: str, payload: Any, options: Mapping[str, Any]
) -> dict[str, Any]:
    """The POST /schedules body: the options given (None: the API's default). `timeout` is
    seconds or a timedelta, the API's `timeout_seconds`."""
    body: dict[str, Any] = {"name": name, "cron": cron, "task": task}
    if payload is not None:
        body["payload"] = payload
    for option, value in options.items():
        if value is None:
            continue
        if option == "timeout":
            body["timeout_seconds"] = int(_seconds(value))
        else:
            body[option] = value
    return body


def schedule_changes(changes: Mapping[str, Any]) -> dict[str, Any]:
    """The PATCH /schedules/{id} body: each field given, None included (it means null)."""
    body = dict(changes)
    if "timeout" in body:
        timeout = body.pop("timeout")
        body["timeout_seconds"] = None if timeout is None else int(_seconds(timeout))
    unknown = sorted(set(body) - set(_SCHEDULE_FIELDS))
    if unknown:
        raise TypeError(f"unknown schedule field(s): {', '.join(unknown)}")
    if not body:
        raise TypeError("update_schedule needs at least one field to change")
    return body


def same_schedule(schedule: Schedule, body: Mapping[str, Any]) -> bool:
    """Whether the schedule is what the POST /schedules body makes: every field of the body,
    or the API's default where the body leaves one out (the cron expression as the API
    stores it, its whitespace collapsed)."""
    wanted = {**SCHEDULE_DEFAULTS, **body}
    wanted["cron"] = " ".join(str(wanted["cron"]).split())
    have = {name: getattr(schedule, name) for name in wanted}
    return have == wanted


@dataclass
class Tries:
    """What the tries of one call came to: `maybe_applied` once a try may have been applied
    without its reply coming back (a connection broken after sending, a proxy's 502 or 504)."""

    maybe_applied: bool = False


@dataclass
class Protocol:
    """The calls of the API as programs (generators of effects). One per client."""

    retry: RetryPolicy = field(default_factory=RetryPolicy)
    rand: random.Random = field(default_factory=random.Random)
    clock: Callable[[], float] = time.monotonic

    # -- one request, with retries ------------------------------------------------------------

    def call(
        self,
        method: str,
        path: str,
        parse: Callable[[httpx.Response], T],
        *,
        json: Any = None,
        params: Mapping[str, str] | None = None,
        repeatable: bool = True,
        extra_timeout: float = 0.0,
        tries: Tries | None = None,
    ) -> Program[T]:
        """Send one request until it gets an answer the retry policy accepts, and parse it.
        `repeatable`: sending it twice is harmless (see RetryPolicy). `tries` learns whether a
        try may have been applied before the one that answered."""
        # One request id for every try: the API's logs show the retries of one call together.
        send = Send(method, path, params, json, {"X-Request-ID": uuid.uuid4().hex}, extra_timeout)
        retry = 0
        while True:
            reply = yield send
            if not isinstance(reply, httpx.TransportError) and reply.status_code < 400:
                return parse(reply)
            retry += 1
            wait = self._retry_wait(reply, retry, repeatable)
            if wait is None:
                if isinstance(reply, httpx.TransportError):
                    message = f"{method} {path}: {reply!r}"
                    raise TransportError(message, sent=_sent(reply)) from reply
                raise error_of(reply)
            if tries is not None and _maybe_applied(reply):
                tries.maybe_applied = True
            yield Sleep(wait)

    def _retry_wait(
        self, reply: httpx.Response | httpx.TransportError, retry: int, repeatable: bool
    ) -> float | None:
        """Seconds to wait before sending the request again, or None to give up."""
        if isinstance(reply, httpx.TransportError):
            safe = repeatable or not _sent(reply)
            return self.retry.delay(retry, None, self.rand) if safe else None
        if reply.status_code in NOT_APPLIED:
            after = retry_after_seconds(reply.headers.get("retry-after"))
            return self.retry.delay(retry, after, self.rand)
        if reply.status_code in GATEWAY_ERRORS and repeatable:
            return self.retry.delay(retry, None, self.rand)
        return None

    # -- jobs -----------------------------------------------------------------------------------

    def submit(self, task: str, payload: Any, options: SubmitOptions) -> Program[Submitted]:
        body, generated = job_body(task, payload, options)

        def parse(reply: httpx.Response) -> Submitted:
            # A 200 for a key this client generated can only answer a try of this very call
            # whose reply was lost: that try created the job.
            return Submitted(Job.from_json(reply.json()), reply.status_code == 201 or generated)

        return self.call("POST", "/jobs", parse, json=body)

    def submit_many(
        self, jobs: Iterable[JobSpec | Mapping[str, Any]], batch_size: int = BATCH_LIMIT
    ) -> Program[BatchResult]:
        if not 1 <= batch_size <= BATCH_LIMIT:
            raise ValueError(f"batch_size must be 1..{BATCH_LIMIT}")
        bodies = [_spec_body(spec) for spec in jobs]
        items: dict[int, BatchItem] = {}
        # (first index, jobs) still to send, the next one last.
        pending = [
            (start, bodies[start : start + batch_size])
            for start in range(0, len(bodies), batch_size)
        ]
        pending.reverse()
        while pending:
            start, chunk = pending.pop()
            try:
                payload = {"jobs": [body for body, _ in chunk]}
                reply = yield from self.call("POST", "/jobs/batch", _json, json=payload)
            except PayloadTooLarge as too_large:
                # Over the API's MAX_BODY_BYTES: send each half on its own (their keys make the
                # halves safe to send again); a single job too large is that job's error.
                if len(chunk) == 1:
                    key = chunk[0][0]["idempotency_key"]
                    items[start] = BatchItem(start, 413, False, None, None, key, too_large)
                else:
                    half = len(chunk) // 2
                    pending += [(start + half, chunk[half:]), (start, chunk[:half])]
                continue
            for offset, result in enumerate(reply["results"]):
                body, generated = chunk[offset]
                key = body["idempotency_key"]
                items[start + offset] = _batch_item(start + offset, result, key, generated)
        return BatchResult(tuple(items[index] for index in sorted(items)))

    def get(self, job_id: str) -> Program[Job]:
        return self.call("GET", _path("jobs", job_id), _job)

    def why(self, job_id: str) -> Program[dict[str, Any]]:
        return self.call("GET", _path("jobs", job_id, "why"), _json)

    def wait(self, job_id: str, timeout: float | None, poll: float) -> Program[Job]:
        """Poll the job until it is finished: quickly at first, then every `poll` seconds."""
        deadline = None if timeout is None else self.clock() + timeout
        interval = min(0.05, poll)
        job: Job | None = None
        while True:
            job = yield from self.get(job_id)
            if job.status not in ACTIVE:
                if job.status == "completed":
                    return job
                raise JobFailed(job)
            if deadline is not None:
                left = deadline - self.clock()
                if left <= 0:
                    raise WaitTimeout(job_id, timeout or 0.0, job)
                interval = min(interval, left)
            yield Sleep(interval)
            interval = min(poll, interval * 2)

    def list_jobs(self, query: Mapping[str, Any]) -> Program[Page]:
        return self.call("GET", "/jobs", _page, params=_filter_params(query))

    def dlq_list(self, query: DeadLetterQuery) -> Program[Page]:
        return self.call("GET", "/dlq", _page, params=_filter_params(query))

    def cancel(self, job_id: str) -> Program[Job]:
        return self.call("POST", _path("jobs", job_id, "cancel"), _job, repeatable=False)

    def retry_job(self, job_id: str) -> Program[Job]:
        return self.call("POST", _path("jobs", job_id, "retry"), _job, repeatable=False)

    def delete(self, job_id: str, dlq: bool = False) -> Program[None]:
        path = _path("dlq" if dlq else "jobs", job_id)
        return self.call("DELETE", path, _nothing, repeatable=False)

    def dlq_replay(self, job_id: str) -> Program[Job]:
        return self.call("POST", _path("dlq", job_id, "replay"), _job, repeatable=False)

    def dlq_replay_many(self, choice: ReplayChoice) -> Program[ReplayResult]:
        body: dict[str, Any] = {**choice}
        if "ids" in body:
            body["ids"] = [str(job_id) for job_id in body["ids"]]
        return self.call("POST", "/dlq/replay", _replay, json=body, repeatable=False)

    def overview(self, tenant: str | None) -> Program[list[dict[str, Any]]]:
        params = _filter_params({"tenant": tenant})
        return self.call("GET", "/overview", _items, params=params)

    # -- schedules ------------------------------------------------------------------------------

    def create_schedule(self, body: Mapping[str, Any]) -> Program[Schedule]:
        """POST /schedules, retried as a read is. A schedule's name is its key within the
        tenant: a try sent again after one whose reply was lost meets that try's schedule as
        `409 schedule-name-taken`. Then the schedule of that name is looked up, and returned
        when it is exactly what this call asked for; otherwise the 409 is raised."""
        tries = Tries()
        try:
            created: Schedule = yield from self.call(
                "POST", "/schedules", _schedule, json=dict(body), tries=tries
            )
        except Conflict as taken:
            if taken.code != "schedule-name-taken" or not tries.maybe_applied:
                raise
            found = yield from self._schedule_like(body)
            if found is None:
                raise
            return found
        return created

    def _schedule_like(self, body: Mapping[str, Any]) -> Program[Schedule | None]:
        """The one schedule the key sees that is what `body` makes, or None (none, or several:
        an admin key sees every tenant's, and names are unique within a tenant only)."""
        matches: list[Schedule] = []
        cursor: str | None = None
        while True:
            page = yield from self.list_schedules(PAGE_LIMIT, cursor)
            matches += [s for s in page.items if same_schedule(s, body)]
            if page.next_cursor is None:
                break
            cursor = page.next_cursor
        return matches[0] if len(matches) == 1 else None

    def list_schedules(self, limit: int, cursor: str | None) -> Program[SchedulePage]:
        params = _filter_params({"limit": limit, "cursor": cursor})
        return self.call("GET", "/schedules", _schedule_page, params=params)

    def get_schedule(self, schedule_id: str, upcoming: int | None) -> Program[Schedule]:
        params = _filter_params({"upcoming": upcoming})
        return self.call("GET", _path("schedules", schedule_id), _schedule, params=params)

    def update_schedule(self, schedule_id: str, changes: ScheduleChanges) -> Program[Schedule]:
        # Setting the same fields again is harmless: repeatable.
        body = schedule_changes(changes)
        return self.call("PATCH", _path("schedules", schedule_id), _schedule, json=body)

    def pause_schedule(self, schedule_id: str, paused: bool) -> Program[Schedule]:
        # Pausing a paused schedule (resuming a running one) changes nothing: repeatable.
        action = "pause" if paused else "resume"
        return self.call("POST", _path("schedules", schedule_id, action), _schedule)

    def delete_schedule(self, schedule_id: str) -> Program[None]:
        path = _path("schedules", schedule_id)
        return self.call("DELETE", path, _nothing, repeatable=False)

    def run_schedule(self, schedule_id: str) -> Program[Job]:
        # Each run makes a job of its own: sent again, it would make a second one.
        path = _path("schedules", schedule_id, "run")
        return self.call("POST", path, _job, repeatable=False)

    # -- admin ------------------------------------------------------------------------------

    def queues(self) -> Program[list[dict[str, Any]]]:
        return self.call("GET", "/queues", _items)

    def pause_queue(self, queue: str, paused: bool) -> Program[dict[str, Any]]:
        return self.call("POST", _path("queues", queue, "pause" if paused else "resume"), _json)

    def workers(self) -> Program[list[dict[str, Any]]]:
        return self.call("GET", "/workers", _items)

    def set_fleet_size(self, host: str, processes: int) -> Program[dict[str, Any]]:
        body = {"processes": processes}
        return self.call("PUT", _path("fleet", host, "size"), _json, json=body)

    def clear_fleet_size(self, host: str) -> Program[None]:
        return self.call("DELETE", _path("fleet", host, "size"), _nothing, repeatable=False)

    # -- the HTTP lease protocol ---------------------------------------------------------------

    def lease(
        self, queue: str, worker_id: str, lease_seconds: float, wait_seconds: float
    ) -> Program[Lease | None]:
        body = {
            "worker_id": worker_id,
            "lease_seconds": lease_seconds,
            "wait_seconds": wait_seconds,
        }
        # A lease whose reply was lost expires and its job is recovered: leasing again is safe.
        return self.call(
            "POST",
            _path("queues", queue, "lease"),
            _lease,
            json=body,
            extra_timeout=float(wait_seconds),
        )

    def ack(self, job_id: str, token: str, result: Any) -> Program[None]:
        # Repeated after a lost reply, an ack that was applied answers 409 lease-lost: the
        # worker drops the job, which is what it would do anyway.
        body = {"lease_token": token, "result": result}
        return self.call("POST", _path("jobs", job_id, "ack"), _nothing, json=body)

    def nack(self, job_id: str, token: str, error: str, retry: bool) -> Program[str]:
        body = {"lease_token": token, "error": error, "retry": retry}
        return self.call("POST", _path("jobs", job_id, "nack"), _status, json=body)

    def heartbeat(self, job_id: str, token: str, lease_seconds: float) -> Program[Heartbeat]:
        body = {"lease_token": token, "lease_seconds": lease_seconds}
        return self.call("POST", _path("jobs", job_id, "heartbeat"), _heartbeat, json=body)


# -- parsers of replies ---------------------------------------------------------------------------


def _json(reply: httpx.Response) -> Any:
    return reply.json()


def _nothing(reply: httpx.Response) -> None:
    return None


def _job(reply: httpx.Response) -> Job:
    return Job.from_json(reply.json())


def _schedule(reply: httpx.Response) -> Schedule:
    return Schedule.from_json(reply.json())


def _schedule_page(reply: httpx.Response) -> SchedulePage:
    return SchedulePage.from_json(reply.json())


def _page(reply: httpx.Response) -> Page:
    return Page.from_json(reply.json())


def _items(reply: httpx.Response) -> list[dict[str, Any]]:
    body = reply.json()
    items = body.get("items", []) if isinstance(body, dict) else body
    return [dict(item) for item in items]


def _replay(reply: httpx.Response) -> ReplayResult:
    return ReplayResult.from_json(reply.json())


def _lease(reply: httpx.Response) -> Lease | None:
    return None if reply.status_code == 204 else Lease.from_json(reply.json())


def _status(reply: httpx.Response) -> str:
    return str(reply.json()["status"])


def _heartbeat(reply: httpx.Response) -> Heartbeat:
    body = reply.json()
    return Heartbeat(parse_time(body.get("lease_expires_at")), bool(body.get("cancel_requested")))


def _batch_item(index: int, result: Mapping[str, Any], key: str, generated: bool) -> BatchItem:
    status = int(result["status"])
    problem = result.get("problem")
    error = error_from_problem(status, problem) if problem else None
    return BatchItem(
        index=index,
        status=status,
        # As for a single submit: a 200 for a generated key answers a lost try of this call.
        created=error is None and (status == 201 or generated),
        id=result.get("id"),
        job_status=result.get("job_status"),
        idempotency_key=key,
        error=error,
    )


def settings_from_env(url: str | None, key: str | None) -> tuple[str, str | None]:
    """The API's URL and key: the arguments, else JOBFLEET_URL and JOBFLEET_KEY."""
    url = url or os.environ.get("JOBFLEET_URL") or DEFAULT_URL
    key = key or os.environ.get("JOBFLEET_KEY") or None
    return url.rstrip("/"), key


__all__ = [
    "BATCH_LIMIT",
    "PAGE_LIMIT",
    "Program",
    "Protocol",
    "RetryPolicy",
    "Send",
    "Sleep",
    "job_body",
    "new_idempotency_key",
    "schedule_body",
    "schedule_changes",
    "settings_from_env",
]
