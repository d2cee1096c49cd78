"""Bulk operations: one action on every job that matches a filter, run in bounded batches."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query, status
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from app.api.bodies import JsonRoute
from app.api.deps import ContextDep, Reader, Writer
from app.api.openapi import Responses
from app.domain.bulk import BulkAction, BulkState
from app.domain.filters import ErrorFilter, JobQuery, PayloadFilter, TenantName, parse_containment
from app.domain.schemas import Cursor, IdempotencyKey, QueueName, TaskName
from app.domain.states import JobStatus
from app.domain.values import UtcDatetime
from app.services import bulk
from app.services.bulk import BulkOperationOut, BulkPage

router = APIRouter(prefix="/bulk", tags=["bulk operations"], route_class=JsonRoute)

NO_OPERATION: Responses = {404: {"description": "No such bulk operation for this key's tenant"}}


class BulkFilter(BaseModel):
    """Which jobs: every field narrows; an empty filter is every job the action can move."""

    model_config = ConfigDict(extra="forbid")

    tenant: TenantName | None = Field(
        None,
        description=(
            "Admin keys: only this tenant's jobs (absent: every tenant's). Producer keys act on "
            "their own tenant's jobs whatever this says."
        ),
    )
    status: JobStatus | None = Field(
        None, description="Only jobs in this status; it must be one the action moves"
    )
    queue: QueueName | None = None
    task: TaskName | None = None
    created_after: UtcDatetime | None = Field(None, description="Created at or after")
    created_before: UtcDatetime | None = Field(None, description="Created before")
    id: uuid.UUID | None = Field(None, description="This job only")
    idempotency_key: IdempotencyKey | None = None
    payload: PayloadFilter | None = None
    error: ErrorFilter | None = None

    def query(self) -> JobQuery:
        """The same search GET /jobs makes of the same fields."""
        return JobQuery(
            tenant=self.tenant,
            status=self.status,
            queue=self.queue,
            task=self.task,
            created_after=self.created_after,
            created_before=self.created_before,
            job_id=self.id,
            idempotency_key=self.idempotency_key,
            payload_contains=None if self.payload is None else parse_containment(self.payload),
            error_contains=self.error,
        )


class BulkRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    action: BulkAction = Field(
        description=(
            "cancel: queued and scheduled jobs; retry: failed and cancelled jobs; replay: "
            "failed jobs (the dead-letter queue); delete: any job that is not running"
        )
    )
    filter: BulkFilter = Field(default_factory=BulkFilter)
    dry_run: bool = Field(False, description="Only count the jobs it would act on now (200)")


class BulkPreview(BaseModel):
    action: BulkAction
    count: int = Field(description="Jobs the action would act on now")


@router.post(
    "",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=BulkOperationOut,
    responses={200: {"model": BulkPreview, "description": "dry_run: the count, nothing done"}},
)
def start_bulk_operation(
    body: BulkRequest, ctx: ContextDep, principal: Writer
) -> BulkOperationOut | JSONResponse:
    """Start the operation (202): it runs in the background, in batches of at most
    BULK_BATCH_SIZE jobs, each its own transaction; GET /bulk/{id} shows its progress. With
    `dry_run`, only the count (200)."""
    query = body.filter.query()
    if body.dry_run:
        count = bulk.preview(ctx, principal, body.action, query)
        preview = BulkPreview(action=body.action, count=count)
        return JSONResponse(preview.model_dump(mode="json"))
    return bulk.start(ctx, principal, body.action, query)


@router.get("")
def list_bulk_operations(
    ctx: ContextDep,
    principal: Reader,
    state: BulkState | None = None,
    limit: Annotated[int, Query(ge=1, le=100, description="Operations per page")] = 20,
    cursor: Annotated[
        Cursor | None,
        Query(description="The `next_cursor` of the previous page, with the same filters"),
    ] = None,
) -> BulkPage:
    """Newest first: an admin key sees every operation, a producer key its tenant's."""
    return bulk.list_operations(ctx, principal, state, limit, cursor)


@router.get("/{operation_id}", responses=NO_OPERATION)
def get_bulk_operation(
    operation_id: uuid.UUID, ctx: ContextDep, principal: Reader
) -> BulkOperationOut:
    """The operation and its progress: `done` and `skipped` of `total`."""
    return bulk.get(ctx, principal, operation_id)


@router.post(
    "/{operation_id}/cancel",
    responses={**NO_OPERATION, 409: {"description": "The operation has already ended"}},
)
def cancel_bulk_operation(
    operation_id: uuid.UUID, ctx: ContextDep, principal: Writer
) -> BulkOperationOut:
    """Stop the operation: no batch runs after this answers; jobs already changed stay so."""
    return bulk.cancel(ctx, principal, operation_id)
