"""The shapes of requests and replies. Pure data, no I/O."""

from __future__ import annotations

import hashlib
import re
import uuid
from datetime import datetime
from typing import Annotated, Any

import orjson
from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    field_validator,
    model_validator,
)

from app.domain.states import AttemptOutcome, JobStatus

QueueName = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")]
TaskName = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.:-]+$")]
# Postgres text cannot hold a NUL character.
IdempotencyKey = Annotated[str, Field(min_length=1, max_length=255, pattern=r"^[^\x00]+$")]
Priority = Annotated[int, Field(ge=0, le=9)]

MAX_BATCH = 1000

# An escaped NUL in JSON text: \u0000 after an even number of backslashes (not a literal "\\u").
_ESCAPED_NUL = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")


def has_nul(json_text: str) -> bool:
    """Whether JSON text holds a NUL character, which Postgres' jsonb refuses."""
    return "\\u0000" in json_text and _ESCAPED_NUL.search(json_text) is not None


class JobCreate(BaseModel):
    """A job to submit. Higher priority runs first within its queue (0 lowest, 9 highest)."""

    model_config = ConfigDict(extra="forbid")

    task: TaskName
    payload: JsonValue = Field(default_factory=dict)
    queue: QueueName = "default"
    priority: Priority = 0
    idempotency_key: IdempotencyKey | None = None
    run_at: AwareDatetime | None = None
    delay_seconds: float | None = Field(None, ge=0, le=366 * 86_400)
    max_retries: int | None = Field(None, ge=0, le=100)
    timeout_seconds: int | None = Field(None, ge=1)

    @field_validator("payload")
    @classmethod
    def _storable(cls, payload: JsonValue) -> JsonValue:
        if has_nul(orjson.dumps(payload).decode()):
            raise ValueError("the payload holds a NUL character (\\u0000); Postgres refuses it")
        return payload

    @model_validator(mode="after")
    def _one_way_to_delay(self) -> JobCreate:
        if self.run_at is not None and self.delay_seconds is not None:
            raise ValueError("give run_at or delay_seconds, not both")
        return self

    def fingerprint(self) -> str:
        """A digest of everything but the idempotency key: equal digests mean the same request."""
        body = self.model_dump(mode="json", exclude={"idempotency_key"})
        return hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).hexdigest()


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
    total: int
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
