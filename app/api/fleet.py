"""Admin routes for the fleet and the queues."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, Field

from app.api.deps import Admin, ContextDep
from app.domain.schemas import QueueName
from app.services import fleet
from app.services.fleet import QueueInfo

router = APIRouter(tags=["fleet"])


class FleetSize(BaseModel):
    processes: int = Field(ge=0, le=256, description="worker processes this host should run")


class WorkerList(BaseModel):
    items: list[dict[str, Any]]
    total: int


@router.get("/workers")
def list_workers(ctx: ContextDep, _: Admin) -> WorkerList:
    """Every live process of every host (managers and workers), from their heartbeats."""
    beats = fleet.list_workers(ctx)
    return WorkerList(items=beats, total=len(beats))


@router.put("/fleet/{host}/size")
def set_fleet_size(host: str, body: FleetSize, ctx: ContextDep, _: Admin) -> dict[str, Any]:
    """Set how many worker processes the manager on `host` keeps running."""
    fleet.set_fleet_size(ctx, host, body.processes)
    return {"host": host, "processes": body.processes}


@router.get("/queues")
def list_queues(ctx: ContextDep, _: Admin) -> list[QueueInfo]:
    return fleet.queues(ctx)


@router.post("/queues/{queue}/pause")
def pause_queue(queue: QueueName, ctx: ContextDep, _: Admin) -> dict[str, Any]:
    """No worker takes new jobs from a paused queue; running jobs finish."""
    fleet.pause(ctx, queue)
    return {"queue": queue, "paused": True}


@router.post("/queues/{queue}/resume")
def resume_queue(queue: QueueName, ctx: ContextDep, _: Admin) -> dict[str, Any]:
    fleet.resume(ctx, queue)
    return {"queue": queue, "paused": False}
