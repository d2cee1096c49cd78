"""Producer routes for jobs: parse, authorize, call the service, shape the reply."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Response, status
from pydantic import BaseModel, Field, TypeAdapter, ValidationError

from app.api.bodies import JsonRoute
from app.api.deps import BatchSubmitter, ContextDep, Reader, Submitter, Writer
from app.api.openapi import Responses
from app.api.paging import Page
from app.api.problems import invalid_item, problem_body
from app.domain.errors import InvalidRequest, JobfleetError
from app.domain.filters import ErrorFilter, JobQuery, PayloadFilter, TenantName, parse_containment
from app.domain.overview import WaitReason
from app.domain.schemas import (
    MAX_BATCH,
    BatchItem,
    BatchReply,
    IdempotencyKey,
    JobCreate,
    JobDetail,
    JobOut,
    JobPage,
    QueueName,
    TaskName,
)
from app.domain.states import JobStatus
from app.domain.values import UtcDatetime
from app.services import jobs, overview, search

router = APIRouter(prefix="/jobs", tags=["jobs"], route_class=JsonRoute)

NO_JOB: Responses = {404: {"description": "No such job for this key's tenant"}}
NOT_NOW: Responses = {409: {"description": "Not allowed in the job's current status"}}


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    responses={
        200: {
            "model": JobOut,
            "description": "Same idempotency key, same request: the job",
        },
        409: {"description": "Same idempotency key, different request"},
    },
)
async def submit_job(
    body: JobCreate,
    response: Response,
    ctx: ContextDep,
    principal: Submitter,
    idempotency_key: Annotated[IdempotencyKey | None, Header(alias="Idempotency-Key")] = None,
) -> JobOut:
    if idempotency_key is not None:
        if body.idempotency_key not in (None, idempotency_key):
            raise InvalidRequest(
                "the Idempotency-Key header and the idempotency_key field differ",
                errors=[
                    {
                        "loc": ["header", "Idempotency-Key"],
                        "msg": "differs from body.idempotency_key",
                        "type": "value_error",
                    }
                ],
            )
        body = body.model_copy(update={"idempotency_key": idempotency_key})
    submitted = await jobs.submit_grouped(ctx, principal, body)
    if not submitted.created:
        response.status_code = status.HTTP_200_OK
    return submitted.job


class BatchRequest(BaseModel):
    jobs: list[dict[str, Any]] = Field(min_length=1, max_length=MAX_BATCH)


@router.post("/batch")
def submit_batch(body: BatchRequest, ctx: ContextDep, principal: BatchSubmitter) -> BatchReply:
    """Submit up to 1000 jobs at once: one result per job, in order, each with the status
    code a single POST /jobs would have had (201, 200, 409 or 422)."""
    try:
        # The common case, every job valid, is one validation call for the whole list.
        parsed: list[JobCreate | BatchItem] = list(_JOB_LIST.validate_python(body.jobs))
    except ValidationError:
        parsed = [_parse_one(position, raw) for position, raw in enumerate(body.jobs)]
    valid = [item for item in parsed if isinstance(item, JobCreate)]
    outcomes = iter(jobs.submit_many(ctx, principal, valid, full=False) if valid else [])
    results = []
    for item in parsed:
        if isinstance(item, BatchItem):
            results.append(item)
            continue
        outcome = next(outcomes)
        if isinstance(outcome, JobfleetError):
            results.append(BatchItem(status=outcome.status, problem=problem_body(outcome)))
        else:
            status_code = 201 if outcome.created else 200
            record = outcome.record
            results.append(BatchItem(status=status_code, id=record.id, job_status=record.status))
    return BatchReply(results=results, created=sum(1 for r in results if r.status == 201))


_JOB_LIST = TypeAdapter(list[JobCreate])


def _parse_one(position: int, raw: dict[str, Any]) -> JobCreate | BatchItem:
    try:
        return JobCreate.model_validate(raw)
    except ValidationError as exc:
        return BatchItem(status=422, problem=invalid_item(position, exc))


@router.get("")
def list_jobs(
    ctx: ContextDep,
    principal: Reader,
    page: Page,
    status: JobStatus | None = None,
    queue: QueueName | None = None,
    task: TaskName | None = None,
    tenant: Annotated[
        TenantName | None,
        Query(
            description="Admin keys: only this tenant's jobs. A producer key may name only its own."
        ),
    ] = None,
    created_after: Annotated[
        UtcDatetime | None, Query(description="Created at or after: ISO 8601 with a UTC offset")
    ] = None,
    created_before: Annotated[
        UtcDatetime | None, Query(description="Created before: ISO 8601 with a UTC offset")
    ] = None,
    job_id: Annotated[uuid.UUID | None, Query(alias="id", description="This job only")] = None,
    idempotency_key: Annotated[
        IdempotencyKey | None, Query(description="The job submitted with this key")
    ] = None,
    payload: PayloadFilter | None = None,
    error: ErrorFilter | None = None,
) -> JobPage:
    """Jobs newest first, narrowed by every filter given. `total` counts the matches up to
    10,000 (`total_exact` is false beyond); pages continue with `cursor`."""
    query = JobQuery(
        tenant=tenant,
        status=status,
        queue=queue,
        task=task,
        created_after=created_after,
        created_before=created_before,
        job_id=job_id,
        idempotency_key=idempotency_key,
        payload_contains=None if payload is None else parse_containment(payload),
        error_contains=error,
    )
    return search.search(ctx, principal, query, page.limit, page.cursor, page.offset)


@router.get("/{job_id}", responses=NO_JOB)
def get_job(job_id: uuid.UUID, ctx: ContextDep, principal: Reader) -> JobDetail:
    return jobs.get(ctx, principal, job_id)


@router.get(
    "/{job_id}/why",
    responses={**NO_JOB, 409: {"description": "The job is not waiting (not queued or scheduled)"}},
)
def why_waiting(job_id: uuid.UUID, ctx: ContextDep, principal: Reader) -> WaitReason:
    """Why a queued or scheduled job has not started yet: every cause that holds (its queue is
    paused, no live native worker serves it, its run_at has not come, jobs ahead of it, its id
    missing from Redis). No cause: it is next."""
    return overview.waiting(ctx, principal, job_id)


@router.post(
    "/{job_id}/cancel",
    responses={
        202: {"model": JobOut, "description": "Running: cancellation requested"},
        **NO_JOB,
        **NOT_NOW,
    },
)
def cancel_job(job_id: uuid.UUID, response: Response, ctx: ContextDep, principal: Writer) -> JobOut:
    """Queued or scheduled: cancelled now (200). Running: the worker is told at its next
    heartbeat and the job ends cancelled (202). Finished: 409."""
    cancelled = jobs.cancel(ctx, principal, job_id)
    if not cancelled.immediate:
        response.status_code = status.HTTP_202_ACCEPTED
    return cancelled.job


@router.post("/{job_id}/retry", responses={**NO_JOB, **NOT_NOW})
def retry_job(job_id: uuid.UUID, ctx: ContextDep, principal: Writer) -> JobOut:
    return jobs.retry(ctx, principal, job_id)


@router.delete(
    "/{job_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses={**NO_JOB, **NOT_NOW},
)
def delete_job(job_id: uuid.UUID, ctx: ContextDep, principal: Writer) -> Response:
    jobs.delete(ctx, principal, job_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
