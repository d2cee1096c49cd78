"""Schedules from the dashboard: the list with each one's next fire time, its buttons (pause
or resume, run now, delete) and a form to create one. The actions call the services the API's
routes call (app/api/schedules.py), so each is audited the same way, under the request's id."""

from __future__ import annotations

import json
import uuid
from typing import Any

from fastapi import APIRouter, Request
from pydantic import ValidationError
from starlette.datastructures import FormData
from starlette.responses import Response

from app.domain.errors import InvalidRequest, ScheduleNameTaken, ScheduleNotFound
from app.domain.schedule_schemas import ScheduleCreate
from app.domain.schedules import ALIASES, MisfirePolicy
from app.services import schedules
from app.ui.render import PageRoute, redirect, render
from app.ui.session import PostedForm, Reader, UiSession, Writer, context_of

router = APIRouter(route_class=PageRoute)

SCHEDULES = "/ui/schedules"
PAGE_SIZE = 100
FIELDS = ("name", "cron", "timezone", "task", "queue", "priority", "payload", "misfire_policy")
DEFAULTS = {"timezone": "UTC", "queue": "default", "priority": "0", "payload": "{}",
            "misfire_policy": MisfirePolicy.RUN_LATEST.value}  # fmt: skip


def schedule_id_of(text: str) -> uuid.UUID:
    try:
        return uuid.UUID(text)
    except ValueError:
        raise ScheduleNotFound() from None


def _page(
    request: Request,
    session: UiSession,
    given: dict[str, str] | None = None,
    problems: list[str] | None = None,
) -> Response:
    ctx = context_of(request)
    cursor = request.query_params.get("cursor") or None
    try:
        page = schedules.list_schedules(ctx, session.principal, PAGE_SIZE, cursor)
    except InvalidRequest:  # a cursor that is not one of ours: the first page
        cursor = None
        page = schedules.list_schedules(ctx, session.principal, PAGE_SIZE, None)
    context = {
        "schedules": page.items,
        "form": {**DEFAULTS, **(given or {})},
        "problems": problems or [],
        "aliases": list(ALIASES),
        "policies": [policy.value for policy in MisfirePolicy],
        "first_url": SCHEDULES,
        "here_url": SCHEDULES + (f"?cursor={cursor}" if cursor else ""),
        "next_url": f"{SCHEDULES}?cursor={page.next_cursor}" if page.next_cursor else "",
    }
    return render(request, "schedules.html", context, session, status_code=422 if problems else 200)


@router.get("/schedules")
def schedules_page(request: Request, session: Reader) -> Response:
    return _page(request, session)


def _given(form: FormData) -> dict[str, str]:
    return {name: value for name in FIELDS if isinstance(value := form.get(name), str)}


def _request(given: dict[str, str]) -> ScheduleCreate | list[str]:
    """The form as a request to create a schedule, or what is wrong with it."""
    fields: dict[str, Any] = {
        k: v.strip() for k, v in given.items() if k != "payload" and v.strip()
    }
    try:
        fields["payload"] = json.loads(given.get("payload") or "{}")
    except (json.JSONDecodeError, RecursionError):
        return ["payload: not valid JSON"]
    try:
        return ScheduleCreate.model_validate(fields)
    except ValidationError as exc:
        return [
            f"{'.'.join(str(part) for part in e['loc']) or 'form'}: {e['msg']}"
            for e in exc.errors()
        ]


@router.post("/schedules")
def create_schedule(request: Request, session: Writer, form: PostedForm) -> Response:
    given = _given(form)
    parsed = _request(given)
    if isinstance(parsed, list):
        return _page(request, session, given, parsed)
    try:
        created = schedules.create(context_of(request), session.principal, parsed)
    except (InvalidRequest, ScheduleNameTaken) as exc:
        return _page(request, session, given, [exc.detail])
    return redirect(request, SCHEDULES, f"Schedule {created.name} created.")


@router.post("/schedules/{schedule_id}/pause")
def pause(schedule_id: str, request: Request, session: Writer) -> Response:
    paused = schedules.pause(context_of(request), session.principal, schedule_id_of(schedule_id))
    return redirect(request, SCHEDULES, f"Schedule {paused.name} paused.")


@router.post("/schedules/{schedule_id}/resume")
def resume(schedule_id: str, request: Request, session: Writer) -> Response:
    target = schedule_id_of(schedule_id)
    resumed = schedules.resume(context_of(request), session.principal, target)
    return redirect(request, SCHEDULES, f"Schedule {resumed.name} resumed.")


@router.post("/schedules/{schedule_id}/run")
def run_now(schedule_id: str, request: Request, session: Writer) -> Response:
    job = schedules.run_now(context_of(request), session.principal, schedule_id_of(schedule_id))
    return redirect(request, f"/ui/jobs/{job.id}", "Job created from the schedule.")


@router.post("/schedules/{schedule_id}/delete")
def delete(schedule_id: str, request: Request, session: Writer) -> Response:
    schedules.delete(context_of(request), session.principal, schedule_id_of(schedule_id))
    return redirect(request, SCHEDULES, "Schedule deleted; the jobs it made stay.")
