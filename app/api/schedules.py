"""Producer routes for cron schedules: parse, authorize, call the service, shape the reply."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query, Response, status

from app.api.bodies import JsonRoute
from app.api.deps import ContextDep, Reader, Writer
from app.api.openapi import Responses
from app.domain.schedule_schemas import (
    ScheduleCreate,
    ScheduleDetail,
    ScheduleOut,
    SchedulePage,
    ScheduleUpdate,
)
from app.domain.schemas import Cursor, JobOut
from app.services import schedules
from app.services.schedules import MAX_UPCOMING, UPCOMING

router = APIRouter(prefix="/schedules", tags=["schedules"], route_class=JsonRoute)

NO_SCHEDULE: Responses = {404: {"description": "No such schedule for this key's tenant"}}
NAME_TAKEN: Responses = {409: {"description": "The tenant has another schedule of that name"}}


@router.post("", status_code=status.HTTP_201_CREATED, responses=NAME_TAKEN)
def create_schedule(body: ScheduleCreate, ctx: ContextDep, principal: Writer) -> ScheduleOut:
    """A schedule of the key's tenant. Each fire time makes one job from its template, with
    the idempotency key `schedule:<id>:<fire time in UTC>`; an invalid cron expression or
    time zone is a 422."""
    return schedules.create(ctx, principal, body)


@router.get("")
def list_schedules(
    ctx: ContextDep,
    principal: Reader,
    limit: Annotated[int, Query(ge=1, le=100, description="Schedules per page")] = 20,
    cursor: Annotated[
        Cursor | None, Query(description="The `next_cursor` of the previous page")
    ] = None,
) -> SchedulePage:
    """Oldest first: a producer key's tenant's schedules, or every tenant's for an admin key."""
    return schedules.list_schedules(ctx, principal, limit, cursor)


@router.get("/{schedule_id}", responses=NO_SCHEDULE)
def get_schedule(
    schedule_id: uuid.UUID,
    ctx: ContextDep,
    principal: Reader,
    upcoming: Annotated[
        int, Query(ge=1, le=MAX_UPCOMING, description="How many next fire times to show")
    ] = UPCOMING,
) -> ScheduleDetail:
    """The schedule, its next fire times and the latest jobs it made."""
    return schedules.get(ctx, principal, schedule_id, upcoming)


@router.patch("/{schedule_id}", responses={**NO_SCHEDULE, **NAME_TAKEN})
def update_schedule(
    schedule_id: uuid.UUID, body: ScheduleUpdate, ctx: ContextDep, principal: Writer
) -> ScheduleOut:
    """Change the fields given. A new cron expression or time zone takes effect from the first
    fire time after now."""
    return schedules.update(ctx, principal, schedule_id, body)


@router.post("/{schedule_id}/pause", responses=NO_SCHEDULE)
def pause_schedule(schedule_id: uuid.UUID, ctx: ContextDep, principal: Writer) -> ScheduleOut:
    """No fire until resumed; a paused schedule stays paused."""
    return schedules.pause(ctx, principal, schedule_id)


@router.post("/{schedule_id}/resume", responses=NO_SCHEDULE)
def resume_schedule(schedule_id: uuid.UUID, ctx: ContextDep, principal: Writer) -> ScheduleOut:
    """Fire again from the first fire time after now (the pause's fire times are not made
    up); a running schedule stays as it is."""
    return schedules.resume(ctx, principal, schedule_id)


@router.delete("/{schedule_id}", status_code=status.HTTP_204_NO_CONTENT, responses=NO_SCHEDULE)
def delete_schedule(schedule_id: uuid.UUID, ctx: ContextDep, principal: Writer) -> Response:
    """Delete the schedule; the jobs it made stay."""
    schedules.delete(ctx, principal, schedule_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/{schedule_id}/run", status_code=status.HTTP_201_CREATED, responses=NO_SCHEDULE)
def run_schedule(schedule_id: uuid.UUID, ctx: ContextDep, principal: Writer) -> JobOut:
    """One job of the schedule's template now, paused or not, beside its fire times; its
    idempotency key is `schedule:<id>:<now>:manual:<random>`."""
    return schedules.run_now(ctx, principal, schedule_id)
