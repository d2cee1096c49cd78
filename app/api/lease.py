"""The HTTP lease protocol, for workers in any language (scope `worker`)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Response, status
from pydantic import BaseModel, Field

from app.api.bodies import JsonRoute
from app.api.deps import ContextDep, caller
from app.api.jobs import NO_JOB
from app.api.openapi import Responses
from app.domain.schemas import JobOut, QueueName
from app.domain.values import MAX_JSON_DEPTH, StoredJson, StoredText
from app.services import leasing
from app.services.auth import Principal, Scope

router = APIRouter(tags=["http workers"], route_class=JsonRoute)

LOST: Responses = {409: {"description": "The lease is not current: stop working on the job"}}

Worker = Annotated[Principal, Depends(caller(Scope.WORKER, "read"))]
WorkerWrite = Annotated[Principal, Depends(caller(Scope.WORKER, "write"))]


class LeaseRequest(BaseModel):
    worker_id: str = Field(min_length=1, max_length=120, pattern=r"^[A-Za-z0-9_.:@-]+$")
    lease_seconds: float = Field(30, ge=1, le=3600)
    wait_seconds: float = Field(0, ge=0, le=30)


class Leased(BaseModel):
    job: JobOut
    lease_token: uuid.UUID
    lease_expires_at: datetime


class Ack(BaseModel):
    lease_token: uuid.UUID
    result: StoredJson = Field(
        None,
        description=(
            f"Any JSON value, nested at most {MAX_JSON_DEPTH} levels deep; numbers within the "
            "signed 64-bit range; no NUL character or lone surrogate in any string"
        ),
    )


class Nack(BaseModel):
    lease_token: uuid.UUID
    error: StoredText = Field("failed", max_length=10_000, description="No NUL character")
    retry: bool = True


class Heartbeat(BaseModel):
    lease_token: uuid.UUID
    lease_seconds: float = Field(30, ge=1, le=3600)


class HeartbeatReply(BaseModel):
    lease_expires_at: datetime
    cancel_requested: bool


@router.post(
    "/queues/{queue}/lease",
    responses={204: {"description": "Nothing to lease within wait_seconds"}},
)
async def lease(queue: QueueName, body: LeaseRequest, ctx: ContextDep, principal: Worker) -> Any:
    """Take the next job of `queue` (highest priority first), waiting up to wait_seconds. A
    worker key gets its own tenant's jobs only; an admin key any tenant's, in turn."""
    granted = await leasing.lease_next(
        ctx, principal, queue, body.worker_id, body.lease_seconds, body.wait_seconds
    )
    if granted is None:
        return Response(status_code=status.HTTP_204_NO_CONTENT)
    return Leased(
        job=granted.job, lease_token=granted.lease_token, lease_expires_at=granted.lease_expires_at
    )


@router.post(
    "/jobs/{job_id}/ack",
    status_code=status.HTTP_204_NO_CONTENT,
    responses={**NO_JOB, **LOST},
)
def ack(job_id: uuid.UUID, body: Ack, ctx: ContextDep, principal: WorkerWrite) -> Response:
    """The job succeeded with `result`; 409 when the lease is no longer yours."""
    leasing.ack(ctx, principal, job_id, body.lease_token, body.result)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/jobs/{job_id}/nack", responses={**NO_JOB, **LOST})
def nack(job_id: uuid.UUID, body: Nack, ctx: ContextDep, principal: WorkerWrite) -> dict[str, str]:
    """The attempt failed: retried with backoff while retries remain (unless retry is
    false), else the job goes to the dead-letter queue."""
    status = leasing.nack(ctx, principal, job_id, body.lease_token, body.error, body.retry)
    return {"status": status}


@router.post("/jobs/{job_id}/heartbeat", responses={**NO_JOB, **LOST})
def heartbeat(
    job_id: uuid.UUID, body: Heartbeat, ctx: ContextDep, principal: WorkerWrite
) -> HeartbeatReply:
    """Extend the lease; `cancel_requested` tells the worker to stop."""
    extended = leasing.heartbeat(ctx, principal, job_id, body.lease_token, body.lease_seconds)
    return HeartbeatReply(
        lease_expires_at=extended.lease_expires_at, cancel_requested=extended.cancel_requested
    )
