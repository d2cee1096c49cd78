"""The shapes of schedule requests and replies. Pure data, no I/O."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from app.domain.schedules import MAX_CRON_LENGTH, CronError, MisfirePolicy, parse_cron
from app.domain.schedules import parse_timezone as _parse_timezone
from app.domain.schemas import Priority, QueueName, TaskName
from app.domain.states import JobStatus
from app.domain.values import INT32_MAX, MAX_JSON_DEPTH, StoredJson, StoredText


def _cron(value: str) -> str:
    # Five fields or an alias; six (seconds) pass here and are refused by the service unless
    # SCHEDULE_SECONDS_FIELD allows them.
    try:
        return parse_cron(value, seconds=True).expression
    except CronError as exc:
        raise ValueError(str(exc)) from None


def _zone(value: str) -> str:
    try:
        _parse_timezone(value)
    except CronError as exc:
        raise ValueError(str(exc)) from None
    return value


ScheduleName = Annotated[
    StoredText, Field(min_length=1, max_length=128, pattern=r"^[^\x00-\x1f\x7f]+$")
]
CronText = Annotated[
    str,
    Field(
        min_length=1,
        max_length=MAX_CRON_LENGTH,
        description=(
            "Five fields, minute hour day-of-month month day-of-week (`30 2 * * *`, "
            "`*/15 9-17 * * MON-FRI`), or an alias: `@yearly`, `@annually`, `@monthly`, "
            "`@weekly`, `@daily`, `@midnight`, `@hourly`"
        ),
        examples=["30 2 * * *"],
    ),
    AfterValidator(_cron),
]
TimeZoneName = Annotated[
    str,
    Field(
        min_length=1,
        max_length=64,
        description="An IANA time zone the cron expression is read in (`Europe/Berlin`)",
        examples=["UTC"],
    ),
    AfterValidator(_zone),
]
MaxRetries = Annotated[int, Field(ge=0, le=100)]
TimeoutSeconds = Annotated[int, Field(ge=1, le=INT32_MAX)]

_PAYLOAD = (
    f"The payload of every job it creates: any JSON value, nested at most {MAX_JSON_DEPTH} "
    "levels deep"
)
_MISFIRE = (
    "What a fire time missed by more than SCHEDULE_MISFIRE_GRACE_SECONDS (no duty ran) "
    "becomes: `skip`, no job; `run_latest`, one job for the latest missed time"
)


class ScheduleCreate(BaseModel):
    """A cron schedule: each fire time creates one job from its template."""

    model_config = ConfigDict(extra="forbid")

    name: ScheduleName = Field(description="Unique within the tenant")
    cron: CronText
    timezone: TimeZoneName = "UTC"
    task: TaskName
    payload: StoredJson = Field(default_factory=dict, description=_PAYLOAD)
    queue: QueueName = "default"
    priority: Priority = 0
    max_retries: MaxRetries | None = Field(None, description="None: DEFAULT_MAX_RETRIES")
    timeout_seconds: TimeoutSeconds | None = Field(
        None, description="None: DEFAULT_TIMEOUT_SECONDS; lowered to MAX_TIMEOUT_SECONDS"
    )
    enabled: bool = Field(True, description="False: created paused")
    misfire_policy: MisfirePolicy = Field(MisfirePolicy.RUN_LATEST, description=_MISFIRE)


# Fields that a PATCH may not set to null: they have no "server default" to fall back to.
_REQUIRED = ("name", "cron", "timezone", "task", "queue", "priority", "misfire_policy")


class ScheduleUpdate(BaseModel):
    """The fields to change; absent ones stay. A new cron or time zone moves the next fire
    time to the first one after now."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"minProperties": 1})

    name: ScheduleName | None = None
    cron: CronText | None = None
    timezone: TimeZoneName | None = None
    task: TaskName | None = None
    payload: StoredJson = Field(None, description=_PAYLOAD)
    queue: QueueName | None = None
    priority: Priority | None = None
    max_retries: MaxRetries | None = Field(None, description="null: DEFAULT_MAX_RETRIES")
    timeout_seconds: TimeoutSeconds | None = Field(
        None, description="null: DEFAULT_TIMEOUT_SECONDS"
    )
    misfire_policy: MisfirePolicy | None = Field(None, description=_MISFIRE)

    @model_validator(mode="after")
    def _no_null_where_a_value_is_needed(self) -> ScheduleUpdate:
        if not self.model_fields_set:
            raise ValueError("give at least one field to change")
        nulls = [name for name in _REQUIRED if name in self.model_fields_set]
        nulls = [name for name in nulls if getattr(self, name) is None]
        if nulls:
            raise ValueError(f"{', '.join(nulls)}: cannot be null")
        return self

    def changes(self) -> dict[str, Any]:
        """The fields given, by column."""
        return {name: getattr(self, name) for name in sorted(self.model_fields_set)}


class ScheduleOut(BaseModel):
    id: uuid.UUID
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
    misfire_policy: MisfirePolicy
    next_fire_at: datetime | None = Field(description="The next fire time; null while paused")
    last_fired_at: datetime | None = Field(description="The latest fire time that made a job")
    created_at: datetime
    updated_at: datetime


class ScheduleJob(BaseModel):
    """One job a schedule created: for a fire time, or by a "run now"."""

    id: uuid.UUID
    status: JobStatus
    fire_time: datetime | None = Field(description="The fire time it was made for; null: manual")
    manual: bool = Field(description="Made by POST /schedules/{id}/run")
    idempotency_key: str
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


class ScheduleDetail(ScheduleOut):
    upcoming: list[datetime] = Field(description="The next fire times, in UTC; none while paused")
    recent_jobs: list[ScheduleJob] = Field(
        description="Its latest jobs (those retention has not deleted), newest first"
    )


class SchedulePage(BaseModel):
    items: list[ScheduleOut]
    limit: int
    next_cursor: str | None = None
