"""One job: its payload, result and attempt timeline, its timing and limits, why it waits
when it waits, and the Cancel, Retry and Delete its status allows."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Request
from redis.exceptions import RedisError
from starlette.responses import Response

from app.domain.errors import InvalidTransition, JobNotFound
from app.domain.overview import WaitReason
from app.domain.states import WAITING
from app.services import jobs, overview
from app.ui import job_views
from app.ui.job_filters import local_path
from app.ui.render import PageRoute, redirect, render
from app.ui.session import PostedForm, Reader, Writer, context_of

router = APIRouter(route_class=PageRoute)

UNKNOWN_WAIT = "Why it waits cannot be told now: Redis, which holds the queues, does not answer."


def job_id_of(text: str) -> uuid.UUID:
    """A job id from a URL; anything that is not one is no job (404), as in the API."""
    try:
        return uuid.UUID(text)
    except ValueError:
        raise JobNotFound() from None


@router.get("/jobs/{job_id}")
def job_page(job_id: str, request: Request, session: Reader) -> Response:
    ctx, principal = context_of(request), session.principal
    job = jobs.get(ctx, principal, job_id_of(job_id))
    why: WaitReason | None = None
    why_unknown = ""
    if job.status in WAITING:
        try:
            why = overview.why_waiting(ctx, principal, job.id)
        except RedisError:  # the rest of the page is Postgres's, and still worth showing
            why_unknown = UNKNOWN_WAIT
    context = {
        "job": job,
        "why": why,
        "why_unknown": why_unknown,
        "actions": job_views.actions(job),
        "timeline": job_views.timeline(job),
        "payload": job_views.pretty(job.payload),
        "result": None if job.result is None else job_views.pretty(job.result),
        "views": job_views,
    }
    return render(request, "job.html", context, session)


def _back(form: PostedForm, job_id: uuid.UUID) -> str:
    given = form.get("back")
    return local_path(given if isinstance(given, str) else None, f"/ui/jobs/{job_id}")


def _refused(request: Request, error: InvalidTransition, back: str) -> Response:
    """The job moved on meanwhile (another person, a worker): say so where it was asked."""
    return redirect(request, back, f"Not done: {error.detail}.", error=True)


@router.post("/jobs/{job_id}/cancel")
def cancel_job(job_id: str, request: Request, session: Writer, form: PostedForm) -> Response:
    target = job_id_of(job_id)
    back = _back(form, target)
    try:
        cancelled = jobs.cancel(context_of(request), session.principal, target)
    except InvalidTransition as exc:
        return _refused(request, exc, back)
    if cancelled.immediate:
        return redirect(request, back, "Job cancelled.")
    return redirect(
        request, back, "Cancellation requested: the job stops when its worker next checks in."
    )


@router.post("/jobs/{job_id}/retry")
def retry_job(job_id: str, request: Request, session: Writer, form: PostedForm) -> Response:
    target = job_id_of(job_id)
    back = _back(form, target)
    try:
        jobs.retry(context_of(request), session.principal, target)
    except InvalidTransition as exc:
        return _refused(request, exc, back)
    return redirect(request, back, "Job queued again, with a fresh retry budget.")


@router.post("/jobs/{job_id}/delete")
def delete_job(job_id: str, request: Request, session: Writer, form: PostedForm) -> Response:
    target = job_id_of(job_id)
    try:
        jobs.delete(context_of(request), session.principal, target)
    except InvalidTransition as exc:
        return _refused(request, exc, _back(form, target))
    # Its own page is gone: to the job list.
    return redirect(request, "/ui/jobs", f"Job {target} deleted.")
