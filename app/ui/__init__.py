"""The operator dashboard, served by the API under /ui: server-rendered pages (Jinja2) over
the same services as the API, a little script, no build step, nothing from another site.

Pages are thin, like routers: a page asks services for data and renders a template. Sign-in,
CSRF and the security headers are app/ui/session.py, csrf.py and security.py.
"""

from __future__ import annotations

from fastapi import APIRouter, FastAPI, Request
from fastapi.staticfiles import StaticFiles
from starlette.responses import Response

from app.domain.errors import NotFound
from app.ui import (
    pages_audit,
    pages_bulk,
    pages_dlq,
    pages_fleet,
    pages_job,
    pages_jobs,
    pages_login,
    pages_overview,
    pages_schedules,
)
from app.ui.render import STATIC, STATIC_URL, PageRoute, build_environment, redirect
from app.ui.session import Reader

PREFIX = "/ui"

router = APIRouter(prefix=PREFIX, include_in_schema=False, route_class=PageRoute)
router.include_router(pages_login.router)
router.include_router(pages_overview.router)
router.include_router(pages_jobs.router)
router.include_router(pages_job.router)
router.include_router(pages_dlq.router)
router.include_router(pages_bulk.router)
router.include_router(pages_schedules.router)
router.include_router(pages_fleet.router)
router.include_router(pages_audit.router)


@router.get("")
def dashboard_root(request: Request) -> Response:
    return redirect(request, PREFIX + "/")


# Last: any other path under /ui is a missing page (an HTML one, not the API's problem JSON).
missing = APIRouter(prefix=PREFIX, include_in_schema=False, route_class=PageRoute)


@missing.api_route("/{path:path}", methods=["GET", "POST"])
def missing_page(path: str, _: Reader) -> Response:
    """Signed out, the sign-in page comes first (a bookmark of a page still to come works)."""
    raise NotFound(f"there is no dashboard page at /ui/{path}")


def install(app: FastAPI) -> None:
    """Serve the dashboard from `app`: its templates, its static files, its pages."""
    app.state.ui_templates = build_environment()
    # Mounted before the pages: the catch-all page route must not shadow the static files.
    app.mount(STATIC_URL, StaticFiles(directory=STATIC), name="ui-static")
    app.include_router(router)
    app.include_router(missing)
