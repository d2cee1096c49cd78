"""The shapes of requests and replies. Pure data, no I/O."""

from __future__ import annotations

import hashlib
import re
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any

import orjson
from pydantic import BaseModel, ConfigDict, Field, model_validator

from app.domain.filters import TOTAL_CAP
from app.domain.states import AttemptOutcome, JobStatus
from app.domain.values import INT32_MAX, MAX_JSON_DEPTH, StoredJson, StoredText, UtcDatetime

QueueName = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")]
TaskName = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.:-]+$")]
IdempotencyKey = Annotated[StoredText, Field(min_length=1, max_length=255)]
Priority = Annotated[int, Field(ge=0, le=9)]
# A tenant, as API keys name it (the `--tenant` of `keys create`): the jobs.tenant column.
TenantName = Annotated[StoredText, Field(min_length=1, max_length=128)]
# A fleet host: its FLEET_HOST setting, or its hostname.
HostName = Annotated[str, Field(min_length=1, max_length=253, pattern=r"^[A-Za-z0-9_.-]+$")]
# How many worker processes a host's manager should run (PUT /fleet/{host}/size).
ProcessCount = Annotated[int, Field(ge=0, le=256)]
# An opaque list cursor: the `next_cursor` of a previous page, unpadded base64url.
Cursor = Annotated[str, Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9_-]+$")]

MAX_BATCH = 1000
# Deeper pages use the cursor: an offset makes Postgres read and drop every row before it.
MAX_OFFSET = 10_000

# An escaped NUL in JSON text: \u0000 after an even number of backslashes (not a literal "\\u").
_ESCAPED_NUL = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")


def has_nul(json_text: str) -> bool:
    """Whether JSON text holds a NUL character, which Postgres' jsonb refuses."""
    return "\\u0000" in json_text and _ESCAPED_NUL.search(json_text) is not None


class JobCreate(BaseModel):
    """A job to submit. Higher priority runs first within its queue (0 lowest, 9 highest)."""

    model_config = ConfigDict(
        extra="forbid",
        # The rule of _one_way_to_delay, for readers of the OpenAPI document.
        json_schema_extra={
            "not": {
                "required": ["run_at", "delay_seconds"],
                "properties": {"run_at": {"type": "string"}, "delay_seconds": {"type": "number"}},
            }
        },
    )

    task: TaskName
    payload: StoredJson = Field(
        default_factory=dict,
        description=(
            f"Any JSON value, nested at most {MAX_JSON_DEPTH} levels deep; numbers within the "
            "signed 64-bit range; no NUL character or lone surrogate in any string"
        ),
    )
    queue: QueueName = "default"
    priority: Priority = 0
    idempotency_key: IdempotencyKey | None = None
    run_at: UtcDatetime | None = Field(
        None,
        description=(
            "When to run it: ISO 8601 with a UTC offset, stored in UTC; the time in UTC must "
            "fall within the years 1 to 9999. A past time runs it now."
        ),
    )
    delay_seconds: float | None = Field(None, ge=0, le=366 * 86_400)
    max_retries: int | None = Field(None, ge=0, le=100)
    timeout_seconds: int | None = Field(
        None, ge=1, le=INT32_MAX, description="Lowered to the server's MAX_TIMEOUT_SECONDS"
    )

    @model_validator(mode="after")
    def _one_way_to_delay(self) -> JobCreate:
        if self.run_at is not None and self.delay_seconds is not None:
            raise ValueError("give run_at or delay_seconds, not both")
        return self

    def fingerprint(self) -> str:
        """A digest of everything but the idempotency key: equal digests mean the same request."""
        body = self.model_dump(mode="json", exclude={"idempotency_key"})
        return hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).hexdigest()


@dataclass(frozen=True)
class JobDefaults:
    """What a submit that leaves them out gets: its retries and its timeout; and the cap of
    any job's timeout. The API takes them from its settings (DEFAULT_MAX_RETRIES,
    DEFAULT_TIMEOUT_SECONDS, MAX_TIMEOUT_SECONDS); an enqueue inside an application's own
    transaction reads the copy `migrate` keeps in Postgres."""

    max_retries: int
    timeout_seconds: int
    max_timeout_seconds: int

    def retries_of(self, request: JobCreate) -> int:
        return self.max_retries if request.max_retries is None else request.max_retries

    def timeout_of(self, request: JobCreate) -> int:
        return min(request.timeout_seconds or self.timeout_seconds, self.max_timeout_seconds)


class AttemptOut(BaseModel):
    attempt: int
    worker_id: str | None
    started_at: datetime
    finished_at: datetime | None
    outcome: AttemptOutcome | None
    error: str | None


class JobOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    tenant: str
    queue: str
    task: str
    payload: Any
    priority: int
    status: JobStatus
    idempotency_key: str | None
    attempts: int
    max_retries: int
    timeout_seconds: int
    run_at: datetime | None
    result: Any
    last_error: str | None
    worker_id: str | None
    cancel_requested: bool = False
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


class JobDetail(JobOut):
    history: list[AttemptOut] = Field(default_factory=list)


class JobPage(BaseModel):
    items: list[JobOut]
    total: int = Field(description=f"Jobs that match; {TOTAL_CAP:,} when more match")
    total_exact: bool = Field(
        True, description=f"False when more than `total` jobs match (counted up to {TOTAL_CAP:,})"
    )
    limit: int
    offset: int
    next_cursor: str | None = None


class BatchItem(BaseModel):
    """The outcome of one job of a batch: its own status code (201 created, 200 the existing
    job of a reused key, 409 or 422), and its job id or a problem. GET /jobs/{id} reads the
    whole job."""

    status: int
    id: uuid.UUID | None = None
    job_status: JobStatus | None = None
    problem: dict[str, Any] | None = None


class BatchReply(BaseModel):
    results: list[BatchItem]
    created: int
