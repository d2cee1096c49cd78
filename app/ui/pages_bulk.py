"""Bulk operations from the dashboard: the count first (a dry run), then the operation, run
in bounded batches by the bulk duty (BulkRunner, app/services/maintenance.py) in whichever
process holds its lock, so it goes on across API restarts; its page shows the progress and
refreshes itself until the operation ends."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Request
from starlette.responses import Response

from app.domain.bulk import ACTIVE_STATES, BulkAction
from app.domain.errors import BulkOperationEnded, BulkOperationNotFound, InvalidRequest
from app.domain.filters import JobQuery
from app.services import bulk, search
from app.services.auth import Principal
from app.ui import job_filters, job_views
from app.ui.job_filters import Filters, Problem, form_values
from app.ui.render import PageRoute, error_page, redirect, render
from app.ui.session import PostedForm, Reader, Writer, context_of

router = APIRouter(route_class=PageRoute)

RECENT = 20
# How often a running operation's page refreshes its progress, in milliseconds.
REFRESH_MS = 1000
WORDS = {
    BulkAction.CANCEL: "Cancel",
    BulkAction.RETRY: "Retry",
    BulkAction.REPLAY: "Replay",
    BulkAction.DELETE: "Delete",
}


def operation_id_of(text: str) -> uuid.UUID:
    try:
        return uuid.UUID(text)
    except ValueError:
        raise BulkOperationNotFound() from None


def _read(form: PostedForm) -> tuple[BulkAction, Filters, JobQuery] | list[Problem]:
    """The action and the filters of a bulk form, or what is wrong with them."""
    values = form_values(form)
    filters = job_filters.read(values)
    problems = list(filters.problems)
    try:
        action = BulkAction(values.get("action", ""))
    except ValueError:
        known = ", ".join(action.value for action in BulkAction)
        problems.append(Problem("action", f"choose one of {known}"))
    if problems or filters.query is None:
        return problems
    return action, filters, filters.query


def _refused(request: Request, problems: list[Problem]) -> Response:
    errors = [problem.text for problem in problems]
    return error_page(request, 422, "Invalid request", "Nothing was done.", None, errors)


def _scoped(principal: Principal, query: JobQuery) -> JobQuery:
    # As the job list would run it: another tenant's filter is refused (403) for a producer,
    # never quietly narrowed to its own tenant's jobs.
    return search.scoped(principal, query)


@router.post("/bulk/preview")
def preview(request: Request, session: Writer, form: PostedForm) -> Response:
    """How many jobs the action would reach now: a dry run, nothing is changed."""
    read = _read(form)
    if isinstance(read, list):
        return _refused(request, read)
    action, filters, query = read
    principal = session.principal
    try:
        count = bulk.preview(context_of(request), principal, action, _scoped(principal, query))
    except InvalidRequest as exc:  # a status the action does not move
        return _refused(request, [Problem("status", exc.detail)])
    context = {
        "action": action.value,
        "action_word": WORDS[action],
        "count": count,
        "filters": filters,
        "labels": job_filters.LABELS,
        "back": "/ui/jobs?" + filters.params(),
    }
    return render(request, "bulk_preview.html", context, session)


@router.post("/bulk")
def run(request: Request, session: Writer, form: PostedForm) -> Response:
    """Start the operation on every job that matches now; its page shows the progress."""
    read = _read(form)
    if isinstance(read, list):
        return _refused(request, read)
    action, _, query = read
    principal = session.principal
    try:
        operation = bulk.start(context_of(request), principal, action, _scoped(principal, query))
    except InvalidRequest as exc:
        return _refused(request, [Problem("status", exc.detail)])
    return redirect(
        request, f"/ui/bulk/{operation.id}", f"{WORDS[action]}: started on {operation.total} jobs."
    )


@router.get("/bulk")
def operations_page(request: Request, session: Reader) -> Response:
    """The latest operations: an admin sees every tenant's, a producer its own tenant's."""
    page = bulk.list_operations(context_of(request), session.principal, None, RECENT, None)
    context = {"operations": page.items, "words": WORDS}
    return render(request, "bulk_list.html", context, session)


@router.get("/bulk/{operation_id}")
def operation_page(operation_id: str, request: Request, session: Reader) -> Response:
    operation = bulk.get(context_of(request), session.principal, operation_id_of(operation_id))
    context = {
        "operation": operation,
        "active": operation.state in ACTIVE_STATES,
        "action_word": WORDS[operation.action],
        "filter_text": job_views.pretty(operation.filter),
        "refresh_ms": REFRESH_MS,
    }
    return render(request, "bulk.html", context, session)


@router.post("/bulk/{operation_id}/cancel")
def stop(operation_id: str, request: Request, session: Writer) -> Response:
    target = operation_id_of(operation_id)
    try:
        operation = bulk.cancel(context_of(request), session.principal, target)
    except BulkOperationEnded:
        return redirect(request, f"/ui/bulk/{target}", "It had already ended.", error=True)
    return redirect(
        request,
        f"/ui/bulk/{target}",
        f"Stopped after {operation.done} jobs; the jobs it changed stay as they are.",
    )
