"""The shapes of the overview (the state of each queue at a glance) and of the answer to
"why is this job waiting?". Pure data, no I/O."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, Field

from app.domain.states import JobStatus


class QueueOverview(BaseModel):
    """One queue, as a key sees it: an admin key every tenant's jobs (or the one it names), a
    producer key its own tenant's."""

    queue: str
    paused: bool
    jobs: dict[str, int] = Field(
        description="Jobs per status: queued, scheduled, processing and failed (the DLQ)"
    )
    oldest_waiting_seconds: float | None = Field(
        description="How long the oldest queued job has been ready; null when none is queued"
    )
    ready_in_redis: int = Field(description="Ids waiting in the queue's ready lists")
    completed_last_hour: int
    failed_last_hour: int
    failure_rate: float | None = Field(
        description="failed / (completed + failed) over the last hour; null when neither"
    )


class WaitCause(StrEnum):
    PAUSED = "paused"  # its queue is paused
    NO_WORKER = "no_worker"  # no live native worker serves its queue (HTTP workers unseen)
    RUN_AT = "run_at"  # scheduled: its run_at has not come
    BEHIND = "behind"  # queued jobs of a higher or equal priority, ready before it, go first
    NOT_IN_REDIS = "not_in_redis"  # queued, but its id is missing from its ready list


class WaitReason(BaseModel):
    """Why a queued or scheduled job has not started: every cause that holds, in the order of
    WaitCause, each explained in `explanations`. No cause: it is next, and a worker is free
    to take it."""

    job_id: uuid.UUID
    status: JobStatus
    queue: str
    reasons: list[WaitCause]
    explanations: list[str]
    run_at: datetime | None = Field(None, description="With `run_at`: when it becomes ready")
    behind: int | None = Field(None, description="With `behind`: how many jobs go first")
    behind_exact: bool = Field(True, description="False when more than `behind` go first")
    sweep_after_seconds: float | None = Field(
        None, description="With `not_in_redis`: the reconciler pushes its id again within this"
    )
