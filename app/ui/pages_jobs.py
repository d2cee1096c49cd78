"""The job list: every filter in the URL (so a view can be bookmarked and shared), newest
first, page after page by keyset cursor; and the bulk form that acts on every job the
filters match, not just this page."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from app.domain.bulk import BulkAction
from app.domain.errors import InvalidRequest
from app.domain.states import JobStatus
from app.services import search
from app.ui import job_filters, job_views
from app.ui.job_filters import Problem
from app.ui.render import PageRoute, render
from app.ui.session import Reader, context_of

router = APIRouter(route_class=PageRoute)

PAGE_SIZE = 50
MAX_PAGE_SIZE = 100
# What the bulk form offers (deleting many jobs at once stays with the API).
BULK_ACTIONS = (BulkAction.CANCEL, BulkAction.RETRY, BulkAction.REPLAY)


def page_size(text: str | None) -> int | Problem:
    """The `limit` of the URL: jobs per page, 1 to 100 (50 when absent)."""
    if not text:
        return PAGE_SIZE
    if not (text.isascii() and text.isdigit()) or not 1 <= int(text) <= MAX_PAGE_SIZE:
        return Problem("limit", f"jobs per page: a whole number from 1 to {MAX_PAGE_SIZE}")
    return int(text)


@router.get("/jobs")
def jobs_page(request: Request, session: Reader) -> Response:
    """Jobs newest first, narrowed by the URL's filters. Filters that cannot be read are
    named on the page (422), with the form to correct them."""
    params = request.query_params
    filters = job_filters.read(params)
    problems = list(filters.problems)
    limit = page_size(params.get("limit"))
    if isinstance(limit, Problem):
        problems.append(limit)
        limit = PAGE_SIZE
    cursor = params.get("cursor") or None
    page = None
    if filters.query is not None and not problems:
        try:
            page = search.search(
                context_of(request), session.principal, filters.query, limit, cursor
            )
        except InvalidRequest as exc:  # a cursor that is not one of ours
            problems.append(Problem("cursor", exc.detail))
    # Kept in every link of the list beside the filters; the default is not repeated.
    size = None if limit == PAGE_SIZE else str(limit)
    context = {
        "filters": filters,
        "problems": problems,
        "statuses": [status.value for status in JobStatus],
        "page": page,
        "limit": size,
        "cursor": cursor,
        "here_url": "/ui/jobs?" + filters.params(limit=size, cursor=cursor),
        "first_url": "/ui/jobs?" + filters.params(limit=size),
        "next_url": (
            "/ui/jobs?" + filters.params(limit=size, cursor=page.next_cursor)
            if page is not None and page.next_cursor
            else ""
        ),
        "bulk_actions": [action.value for action in BULK_ACTIONS],
        "views": job_views,
    }
    return render(request, "jobs.html", context, session, status_code=422 if problems else 200)
