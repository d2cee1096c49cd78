"""The dead-letter queue: failed jobs grouped by task and error (the largest groups first),
and listed one by one, newest first; replay one, replay a whole group (a bulk operation),
delete one. Its filters are the job list's, in the URL; a group's "Show" link narrows the list
to that group."""

from __future__ import annotations

import dataclasses

from fastapi import APIRouter, Request
from starlette.responses import Response

from app.domain.bulk import BulkAction
from app.domain.errors import InvalidRequest, InvalidTransition
from app.domain.records import DeadLetterGroup
from app.domain.states import JobStatus
from app.services import bulk, dlq, search
from app.ui import job_filters, job_views
from app.ui.job_filters import DLQ_FIELDS, Filters, Problem, form_values, local_path
from app.ui.pages_job import job_id_of
from app.ui.pages_jobs import PAGE_SIZE, page_size
from app.ui.render import PageRoute, error_page, redirect, render
from app.ui.session import PostedForm, Reader, Writer, context_of

router = APIRouter(route_class=PageRoute)

# Groups shown: the largest ones; a filter finds the others.
GROUPS_SHOWN = 50


def _narrowed(filters: Filters, group: DeadLetterGroup) -> dict[str, str]:
    """The filters of one group: the page's, narrowed to the group's task and error."""
    return {**filters.given, "task": group.task, "group": group.digest}


@router.get("/dlq")
def dlq_page(request: Request, session: Reader) -> Response:
    ctx, principal = context_of(request), session.principal
    params = request.query_params
    filters = job_filters.read(params, DLQ_FIELDS)
    problems = list(filters.problems)
    limit = page_size(params.get("limit"))
    if isinstance(limit, Problem):
        problems.append(limit)
        limit = PAGE_SIZE
    cursor = params.get("cursor") or None
    groups: list[DeadLetterGroup] = []
    page = None
    if filters.query is not None and not problems:
        dead = dataclasses.replace(filters.query, status=JobStatus.FAILED)
        try:
            page = search.search(ctx, principal, dead, limit, cursor)
        except InvalidRequest as exc:  # a cursor that is not one of ours
            problems.append(Problem("cursor", exc.detail))
        else:
            groups = dlq.groups(ctx, principal, dead, GROUPS_SHOWN)
    size = None if limit == PAGE_SIZE else str(limit)
    here = "/ui/dlq?" + filters.params(limit=size, cursor=cursor)
    context = {
        "filters": filters,
        "problems": problems,
        "groups": [(group, _narrowed(filters, group)) for group in groups],
        "groups_capped": len(groups) == GROUPS_SHOWN,
        "page": page,
        "limit": size,
        "here_url": here,
        "first_url": "/ui/dlq?" + filters.params(limit=size),
        "next_url": (
            "/ui/dlq?" + filters.params(limit=size, cursor=page.next_cursor)
            if page is not None and page.next_cursor
            else ""
        ),
        "views": job_views,
    }
    return render(request, "dlq.html", context, session, status_code=422 if problems else 200)


def _back(form: PostedForm) -> str:
    given = form.get("back")
    return local_path(given if isinstance(given, str) else None, "/ui/dlq")


@router.post("/dlq/replay")
def replay_many(request: Request, session: Writer, form: PostedForm) -> Response:
    """Replay every dead letter the form's filters match (a group: its task and error
    digest) as a bulk operation: in batches, in the background, with its progress on its
    page."""
    filters = job_filters.read(form_values(form), DLQ_FIELDS)
    if filters.query is None:
        errors = [problem.text for problem in filters.problems]
        return error_page(request, 422, "Invalid request", "Nothing was replayed.", None, errors)
    dead = dataclasses.replace(filters.query, status=JobStatus.FAILED)
    principal = session.principal
    operation = bulk.start(
        context_of(request), principal, BulkAction.REPLAY, search.scoped(principal, dead)
    )
    return redirect(
        request, f"/ui/bulk/{operation.id}", f"Replaying {operation.total} dead letters."
    )


@router.post("/dlq/{job_id}/replay")
def replay_job(job_id: str, request: Request, session: Writer, form: PostedForm) -> Response:
    target = job_id_of(job_id)
    try:
        dlq.replay(context_of(request), session.principal, target)
    except InvalidTransition as exc:
        return redirect(request, _back(form), f"Not replayed: {exc.detail}.", error=True)
    return redirect(request, _back(form), f"Job {target} replayed: it is queued again.")


@router.post("/dlq/{job_id}/delete")
def delete_job(job_id: str, request: Request, session: Writer, form: PostedForm) -> Response:
    target = job_id_of(job_id)
    try:
        dlq.delete(context_of(request), session.principal, target)
    except InvalidTransition as exc:
        return redirect(request, _back(form), f"Not deleted: {exc.detail}.", error=True)
    return redirect(request, _back(form), f"Job {target} deleted.")
