"""The fleet, for admins: hosts and their desired size, worker processes and what each runs,
queues with their pause switch. The actions call the services the API's admin routes call
(app/api/fleet.py), so each is audited the same way, under the request's id."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request
from pydantic import TypeAdapter, ValidationError
from starlette.responses import Response

from app.domain.errors import HostNotFound
from app.domain.schemas import HostName, ProcessCount, QueueName
from app.services import fleet
from app.ui.render import PageRoute, redirect, render
from app.ui.session import Admin, AdminWriter, PostedForm, context_of

router = APIRouter(route_class=PageRoute)

FLEET = "/ui/fleet"
REFRESH_MS = 5000
_DIGITS = re.compile(r"^[0-9]{1,6}$", re.ASCII)
_PROCESS_COUNT: TypeAdapter[int] = TypeAdapter(ProcessCount)


def heartbeat_age(beat: dict[str, Any], now: datetime) -> float | None:
    """Seconds since the process last wrote its heartbeat; None when it says no time."""
    seen = beat.get("seen_at")
    if not isinstance(seen, str):
        return None
    try:
        moment = datetime.fromisoformat(seen)
    except ValueError:
        return None
    if moment.tzinfo is None:
        return None
    return max(0.0, (now - moment).total_seconds())


@router.get("/fleet")
def fleet_page(request: Request, session: Admin) -> Response:
    ctx = context_of(request)
    beats = fleet.list_workers(ctx)
    now = datetime.now(UTC)
    hosts = [{**b, "age": heartbeat_age(b, now)} for b in beats if b.get("kind") == "manager"]
    workers = [{**b, "age": heartbeat_age(b, now)} for b in beats if b.get("kind") == "worker"]
    return render(
        request,
        "fleet.html",
        {
            "hosts": hosts,
            "workers": workers,
            "queues": fleet.queues(ctx),
            "refresh_ms": REFRESH_MS,
        },
        session,
    )


def _process_count(raw: object) -> int | None:
    """The posted count when it is a whole number in range; None otherwise."""
    if not isinstance(raw, str) or not _DIGITS.match(raw.strip()):
        return None
    try:
        return _PROCESS_COUNT.validate_python(int(raw.strip()))
    except ValidationError:
        return None


@router.post("/fleet/{host}/size")
def set_size(request: Request, host: HostName, session: AdminWriter, form: PostedForm) -> Response:
    processes = _process_count(form.get("processes"))
    if processes is None:
        return redirect(
            request, FLEET, "Desired processes must be a whole number from 0 to 256.", error=True
        )
    try:
        fleet.set_fleet_size(context_of(request), session.principal, host, processes)
    except HostNotFound as exc:
        return redirect(request, FLEET, exc.detail, error=True)
    return redirect(request, FLEET, f"Host {host} set to {processes} worker processes.")


@router.post("/queues/{queue}/pause")
def pause_queue(request: Request, queue: QueueName, session: AdminWriter) -> Response:
    fleet.pause(context_of(request), session.principal, queue)
    return redirect(request, FLEET, f"Queue {queue} paused: no worker takes its jobs now.")


@router.post("/queues/{queue}/resume")
def resume_queue(request: Request, queue: QueueName, session: AdminWriter) -> Response:
    fleet.resume(context_of(request), session.principal, queue)
    return redirect(request, FLEET, f"Queue {queue} resumed.")
