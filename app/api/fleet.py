"""Admin routes for the fleet and the queues."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response, status
from pydantic import BaseModel, Field

from app.api.bodies import JsonRoute
from app.api.deps import Admin, ContextDep
from app.api.openapi import Responses
from app.domain.schemas import HostName, ProcessCount, QueueName
from app.services import fleet
from app.services.fleet import QueueInfo

router = APIRouter(tags=["fleet"], route_class=JsonRoute)

NO_HOST: Responses = {
    404: {"description": "No live manager on this host and no size stored for it"}
}


class FleetSize(BaseModel):
    processes: ProcessCount = Field(description="worker processes this host should run")


class FleetSizeSet(BaseModel):
    host: str
    processes: int


class WorkerList(BaseModel):
    items: list[dict[str, Any]]
    total: int


class QueueState(BaseModel):
    queue: str
    paused: bool


@router.get("/workers")
def list_workers(ctx: ContextDep, _: Admin) -> WorkerList:
    """Every live process of every host (managers and workers), from their heartbeats."""
    beats = fleet.list_workers(ctx)
    return WorkerList(items=beats, total=len(beats))


@router.put("/fleet/{host}/size", responses=NO_HOST)
def set_fleet_size(
    host: HostName, body: FleetSize, ctx: ContextDep, principal: Admin
) -> FleetSizeSet:
    """Set how many worker processes the manager on `host` keeps running. The host must have
    a live manager (see GET /workers) or a size set before."""
    fleet.set_fleet_size(ctx, principal, host, body.processes)
    return FleetSizeSet(host=host, processes=body.processes)


@router.delete("/fleet/{host}/size", status_code=status.HTTP_204_NO_CONTENT, responses=NO_HOST)
def clear_fleet_size(host: HostName, ctx: ContextDep, principal: Admin) -> Response:
    """Forget the size set for `host`: its manager goes back to its WORKER_PROCESSES."""
    fleet.clear_fleet_size(ctx, principal, host)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/queues")
def list_queues(ctx: ContextDep, _: Admin) -> list[QueueInfo]:
    return fleet.queues(ctx)


@router.post("/queues/{queue}/pause")
def pause_queue(queue: QueueName, ctx: ContextDep, principal: Admin) -> QueueState:
    """No worker takes new jobs from a paused queue; running jobs finish."""
    fleet.pause(ctx, principal, queue)
    return QueueState(queue=queue, paused=True)


@router.post("/queues/{queue}/resume")
def resume_queue(queue: QueueName, ctx: ContextDep, principal: Admin) -> QueueState:
    fleet.resume(ctx, principal, queue)
    return QueueState(queue=queue, paused=False)
