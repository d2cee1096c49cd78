"""The dead-letter queue: failed jobs, to read, replay or delete."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Response, status
from pydantic import BaseModel, Field

from app.api.bodies import JsonRoute
from app.api.deps import ContextDep, Reader, Writer
from app.api.jobs import NO_JOB, NOT_NOW
from app.api.paging import Page
from app.domain.filters import JobQuery
from app.domain.schemas import JobOut, JobPage, QueueName, TaskName
from app.domain.states import JobStatus
from app.services import dlq, search

router = APIRouter(prefix="/dlq", tags=["dead-letter queue"], route_class=JsonRoute)


class ReplayMany(BaseModel):
    """Which failed jobs to replay: any of queue, task and ids narrow the choice."""

    queue: QueueName | None = None
    task: TaskName | None = None
    ids: list[uuid.UUID] | None = Field(None, max_length=1000)
    limit: int = Field(100, ge=1, le=1000)


class Replayed(BaseModel):
    replayed: int
    items: list[JobOut]


@router.get("")
def list_dead_letters(
    ctx: ContextDep,
    principal: Reader,
    page: Page,
    queue: QueueName | None = None,
    task: TaskName | None = None,
) -> JobPage:
    where = JobQuery(principal.tenant_filter, JobStatus.FAILED, queue, task)
    return search.search(ctx, principal, where, page.limit, page.cursor, page.offset)


@router.post("/replay")
def replay_many(body: ReplayMany, ctx: ContextDep, principal: Writer) -> Replayed:
    """Replay up to `limit` failed jobs (oldest first) that match."""
    items = dlq.replay_many(ctx, principal, body.queue, body.task, body.ids, body.limit)
    return Replayed(replayed=len(items), items=items)


@router.post("/{job_id}/replay", responses={**NO_JOB, **NOT_NOW})
def replay(job_id: uuid.UUID, ctx: ContextDep, principal: Writer) -> JobOut:
    """failed -> queued, with a fresh retry budget; the attempt history is kept."""
    return dlq.replay(ctx, principal, job_id)


@router.delete("/{job_id}", status_code=status.HTTP_204_NO_CONTENT, responses={**NO_JOB, **NOT_NOW})
def delete(job_id: uuid.UUID, ctx: ContextDep, principal: Writer) -> Response:
    dlq.delete(ctx, principal, job_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
