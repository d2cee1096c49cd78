"""What the API answers, as frozen dataclasses: the job object of docs/API.md with its
timestamps parsed, and the results of submits, leases and pages. Each keeps the JSON it was
read from in `raw`, so a field the API adds later is not lost on the way."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, NamedTuple, TypedDict, overload

from jobfleet.errors import APIError

__all__ = [
    "ACTIVE",
    "TERMINAL",
    "Attempt",
    "BatchItem",
    "BatchResult",
    "DeadLetterQuery",
    "Heartbeat",
    "Job",
    "JobFilters",
    "JobQuery",
    "JobSpec",
    "Lease",
    "Page",
    "ReplayChoice",
    "ReplayResult",
    "Schedule",
    "ScheduleChanges",
    "ScheduleJob",
    "SchedulePage",
    "SubmitOptions",
    "Submitted",
]

#: Statuses a job leaves by itself; wait() keeps polling while the job is in one of them.
ACTIVE = frozenset({"queued", "scheduled", "processing"})
#: Statuses a job stays in until someone retries, replays or deletes it.
TERMINAL = frozenset({"completed", "failed", "cancelled"})


def parse_time(value: object) -> datetime | None:
    """An ISO 8601 timestamp of the API (always with an offset) as an aware datetime."""
    if value is None:
        return None
    return datetime.fromisoformat(str(value))


@dataclass(frozen=True)
class Attempt:
    """One finished attempt of a job (an item of `GET /jobs/{id}`'s `history`)."""

    attempt: int
    worker_id: str | None
    started_at: datetime | None
    finished_at: datetime | None
    outcome: str
    error: str | None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Attempt:
        return cls(
            attempt=int(data["attempt"]),
            worker_id=data.get("worker_id"),
            started_at=parse_time(data.get("started_at")),
            finished_at=parse_time(data.get("finished_at")),
            outcome=str(data.get("outcome")),
            error=data.get("error"),
        )


@dataclass(frozen=True)
class Job:
    """A job as the API shows it. `history` is None when the reply did not carry it (lists,
    submits, leases); `GET /jobs/{id}` (Client.get) always does."""

    id: str
    tenant: str
    queue: str
    task: str
    payload: Any
    priority: int
    status: str
    idempotency_key: str | None
    attempts: int
    max_retries: int
    timeout_seconds: int
    run_at: datetime | None
    result: Any
    last_error: str | None
    worker_id: str | None
    cancel_requested: bool
    created_at: datetime | None
    updated_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    history: tuple[Attempt, ...] | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def finished(self) -> bool:
        """True in `completed`, `failed` or `cancelled`."""
        return self.status in TERMINAL

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Job:
        history = data.get("history")
        return cls(
            id=str(data["id"]),
            tenant=str(data.get("tenant", "")),
            queue=str(data.get("queue", "")),
            task=str(data.get("task", "")),
            payload=data.get("payload"),
            priority=int(data.get("priority") or 0),
            status=str(data["status"]),
            idempotency_key=data.get("idempotency_key"),
            attempts=int(data.get("attempts") or 0),
            max_retries=int(data.get("max_retries") or 0),
            timeout_seconds=int(data.get("timeout_seconds") or 0),
            run_at=parse_time(data.get("run_at")),
            result=data.get("result"),
            last_error=data.get("last_error"),
            worker_id=data.get("worker_id"),
            cancel_requested=bool(data.get("cancel_requested", False)),
            created_at=parse_time(data.get("created_at")),
            updated_at=parse_time(data.get("updated_at")),
            started_at=parse_time(data.get("started_at")),
            finished_at=parse_time(data.get("finished_at")),
            history=None if history is None else tuple(Attempt.from_json(item) for item in history),
            raw=dict(data),
        )


@dataclass(frozen=True)
class Submitted:
    """The result of one submit: the job, and whether this call created it (`created`) or
    found the job an earlier request with the same idempotency key made (`created` False)."""

    job: Job
    created: bool

    @property
    def id(self) -> str:
        return self.job.id

    @property
    def status(self) -> str:
        return self.job.status

    @property
    def existing(self) -> bool:
        return not self.created


@dataclass(frozen=True)
class BatchItem:
    """The result of one job of submit_many, at `index` in the jobs given: created, existing
    (its idempotency key was used before for the same request), or an `error` (409 or 422)."""

    index: int
    status: int
    created: bool
    id: str | None
    job_status: str | None
    idempotency_key: str | None
    error: APIError | None = None

    @property
    def existing(self) -> bool:
        return self.error is None and not self.created

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass(frozen=True)
class BatchResult(Sequence[BatchItem]):
    """Every result of a submit_many, in the order of the jobs given, and their counts."""

    items: tuple[BatchItem, ...]

    @property
    def created(self) -> int:
        return sum(1 for item in self.items if item.created)

    @property
    def existing(self) -> int:
        return sum(1 for item in self.items if item.existing)

    @property
    def errors(self) -> list[BatchItem]:
        return [item for item in self.items if item.error is not None]

    @property
    def ids(self) -> list[str | None]:
        return [item.id for item in self.items]

    @overload
    def __getitem__(self, index: int) -> BatchItem: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[BatchItem]: ...
    def __getitem__(self, index: int | slice) -> BatchItem | Sequence[BatchItem]:
        return self.items[index]

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self) -> Iterator[BatchItem]:
        return iter(self.items)


@dataclass(frozen=True)
class Lease:
    """A job taken from a queue by the HTTP lease protocol, with its lease."""

    job: Job
    lease_token: str
    lease_expires_at: datetime | None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Lease:
        return cls(
            job=Job.from_json(data["job"]),
            lease_token=str(data["lease_token"]),
            lease_expires_at=parse_time(data.get("lease_expires_at")),
        )


class Heartbeat(NamedTuple):
    """A renewed lease: when it now expires, and whether a cancellation was requested."""

    lease_expires_at: datetime | None
    cancel_requested: bool


@dataclass(frozen=True)
class Page:
    """One page of `GET /jobs` or `GET /dlq`, newest first. `next_cursor` continues after it
    (None on the last page); `total` counts every match up to 10,000 (`total_exact` False
    beyond)."""

    items: tuple[Job, ...]
    next_cursor: str | None
    total: int
    total_exact: bool
    limit: int
    offset: int

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Page:
        return cls(
            items=tuple(Job.from_json(item) for item in data.get("items", [])),
            next_cursor=data.get("next_cursor"),
            total=int(data.get("total") or 0),
            total_exact=bool(data.get("total_exact", True)),
            limit=int(data.get("limit") or 0),
            offset=int(data.get("offset") or 0),
        )


@dataclass(frozen=True)
class ReplayResult:
    """What `POST /dlq/replay` moved back to `queued`."""

    replayed: int
    items: tuple[Job, ...]

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ReplayResult:
        return cls(
            replayed=int(data.get("replayed") or 0),
            items=tuple(Job.from_json(item) for item in data.get("items", [])),
        )


@dataclass(frozen=True)
class ScheduleJob:
    """One job a schedule made (an item of `GET /schedules/{id}`'s `recent_jobs`): for a fire
    time (`fire_time`), or by a run now (`manual`, no fire time)."""

    id: str
    status: str
    fire_time: datetime | None
    manual: bool
    idempotency_key: str
    created_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ScheduleJob:
        return cls(
            id=str(data["id"]),
            status=str(data["status"]),
            fire_time=parse_time(data.get("fire_time")),
            manual=bool(data.get("manual", False)),
            idempotency_key=str(data.get("idempotency_key") or ""),
            created_at=parse_time(data.get("created_at")),
            started_at=parse_time(data.get("started_at")),
            finished_at=parse_time(data.get("finished_at")),
        )


@dataclass(frozen=True)
class Schedule:
    """A cron schedule as the API shows it. `next_fire_at` is None while it is paused
    (`enabled` False). `upcoming` (the next fire times) and `recent_jobs` (newest first) are
    None when the reply did not carry them (lists, changes); `GET /schedules/{id}`
    (Client.get_schedule) always does. `max_retries` and `timeout_seconds` None: the server's
    defaults when it fires."""

    id: str
    tenant: str
    name: str
    cron: str
    timezone: str
    task: str
    payload: Any
    queue: str
    priority: int
    max_retries: int | None
    timeout_seconds: int | None
    enabled: bool
    misfire_policy: str
    next_fire_at: datetime | None
    last_fired_at: datetime | None
    created_at: datetime | None
    updated_at: datetime | None
    upcoming: tuple[datetime, ...] | None = None
    recent_jobs: tuple[ScheduleJob, ...] | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def paused(self) -> bool:
        return not self.enabled

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Schedule:
        upcoming = data.get("upcoming")
        recent = data.get("recent_jobs")
        return cls(
            id=str(data["id"]),
            tenant=str(data.get("tenant", "")),
            name=str(data.get("name", "")),
            cron=str(data.get("cron", "")),
            timezone=str(data.get("timezone", "")),
            task=str(data.get("task", "")),
            payload=data.get("payload"),
            queue=str(data.get("queue", "")),
            priority=int(data.get("priority") or 0),
            max_retries=_optional_int(data.get("max_retries")),
            timeout_seconds=_optional_int(data.get("timeout_seconds")),
            enabled=bool(data.get("enabled", True)),
            misfire_policy=str(data.get("misfire_policy", "")),
            next_fire_at=parse_time(data.get("next_fire_at")),
            last_fired_at=parse_time(data.get("last_fired_at")),
            created_at=parse_time(data.get("created_at")),
            updated_at=parse_time(data.get("updated_at")),
            upcoming=None
            if upcoming is None
            else tuple(t for t in (parse_time(v) for v in upcoming) if t is not None),
            recent_jobs=None
            if recent is None
            else tuple(ScheduleJob.from_json(item) for item in recent),
            raw=dict(data),
        )


def _optional_int(value: object) -> int | None:
    return None if value is None else int(str(value))


@dataclass(frozen=True)
class SchedulePage:
    """One page of `GET /schedules`, oldest first; `next_cursor` continues after it (None on
    the last page)."""

    items: tuple[Schedule, ...]
    next_cursor: str | None
    limit: int

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> SchedulePage:
        return cls(
            items=tuple(Schedule.from_json(item) for item in data.get("items", [])),
            next_cursor=data.get("next_cursor"),
            limit=int(data.get("limit") or 0),
        )


class SubmitOptions(TypedDict, total=False):
    """The optional fields of a submit (docs/API.md, POST /jobs). `delay` is seconds or a
    timedelta; `run_at` an aware datetime (or ISO 8601 text with an offset); `timeout` is the
    job's timeout_seconds. Without `idempotency_key` the client generates one."""

    queue: str
    priority: int
    delay: float | timedelta
    run_at: datetime | str
    max_retries: int
    timeout: int
    idempotency_key: str


class JobSpec(SubmitOptions, total=False):
    """One job of submit_many: `task` and `payload` with the options of a submit. A plain dict
    with the API's own field names (`delay_seconds`, `timeout_seconds`) is taken too."""

    task: str
    payload: Any


class JobFilters(TypedDict, total=False):
    """Filters of `GET /jobs` (docs/API.md); `GET /dlq` takes queue and task only."""

    status: str
    queue: str
    task: str
    tenant: str
    created_after: datetime | str
    created_before: datetime | str
    id: str
    idempotency_key: str
    payload: Any
    error: str


class JobQuery(JobFilters, total=False):
    """One page of `GET /jobs`: the filters, the page size (1..100), and where it starts (the
    `next_cursor` of the page before, or an offset up to 10,000)."""

    limit: int
    cursor: str
    offset: int


class DeadLetterQuery(TypedDict, total=False):
    """One page of `GET /dlq`: failed jobs of this queue and task, `limit` of them (1..100)
    after `cursor`."""

    queue: str
    task: str
    limit: int
    cursor: str


class ReplayChoice(TypedDict, total=False):
    """Which failed jobs `POST /dlq/replay` moves back to `queued`: of this queue and task,
    among these ids (at most 1,000), at most `limit` (1..1,000, default 100) of them."""

    queue: str
    task: str
    ids: Iterable[str]
    limit: int


class ScheduleChanges(TypedDict, total=False):
    """The fields update_schedule changes (docs/API.md, PATCH /schedules/{id}); those not given
    stay. None is taken for `payload`, `max_retries` and `timeout` (the server's defaults
    again); `timeout` is the API's `timeout_seconds`, which is taken too."""

    name: str
    cron: str
    timezone: str
    task: str
    payload: Any
    queue: str
    priority: int
    max_retries: int | None
    timeout: int | None
    timeout_seconds: int | None
    misfire_policy: str
