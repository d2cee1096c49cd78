"""Rendering the dashboard: the Jinja2 environment (one per app, autoescaped), pages, the
Post/Redirect/Get redirect with its flash message, and error pages.

Every page gets the same context beside its own: the signed-in `principal`, the session's
`csrf_token` for its forms, the navigation, the flash message of the action that led here,
and `static()` for the URLs of the static files.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import jinja2
from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from itsdangerous import BadSignature, URLSafeTimedSerializer
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from starlette.responses import HTMLResponse, RedirectResponse, Response

from app.domain.errors import JobfleetError, Unauthorized
from app.ui import session as ui_session
from app.ui.session import UiSession

log = logging.getLogger(__name__)

HERE = Path(__file__).resolve().parent
TEMPLATES = HERE / "templates"
STATIC = HERE / "static"
STATIC_URL = "/ui/static"
LOGIN_URL = "/ui/login"

FLASH_COOKIE = "jf_flash"
FLASH_SECONDS = 60
_FLASH_SALT = "jobfleet.ui.flash"
QUERY_CANCELED = "57014"  # Postgres: the statement outlived API_STATEMENT_TIMEOUT_MS


@dataclass(frozen=True)
class NavItem:
    label: str
    href: str
    admin_only: bool = False


NAV = [
    NavItem("Overview", "/ui/"),
    NavItem("Jobs", "/ui/jobs"),
    NavItem("Dead letters", "/ui/dlq"),
    NavItem("Schedules", "/ui/schedules"),
    NavItem("Fleet", "/ui/fleet", admin_only=True),
    NavItem("Audit", "/ui/audit", admin_only=True),
]


def build_environment() -> jinja2.Environment:
    """The templates of one app. Autoescape on for every template: a job's payload, error
    text or tenant name is shown as text, never as markup."""
    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    versions = _static_versions()
    environment.globals["static"] = lambda name: f"{STATIC_URL}/{name}?v={versions.get(name, '0')}"
    environment.filters["age"] = format_age
    environment.filters["when"] = format_when
    environment.filters["percent"] = format_percent
    return environment


def _static_versions() -> dict[str, str]:
    """A short digest of each static file: its URL changes with its content, so a browser
    never runs an old app.js against a new page."""
    return {
        path.relative_to(STATIC).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()[:12]
        for path in STATIC.rglob("*")
        if path.is_file()
    }


def format_age(seconds: float | None) -> str:
    """1 h 5 min, 3 min 2 s, 4.2 s; an em dash for none."""
    if seconds is None:
        return "—"
    if seconds < 10:
        return f"{seconds:.1f} s"
    whole = int(seconds)
    days, rest = divmod(whole, 86_400)
    hours, rest = divmod(rest, 3_600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days} d {hours} h"
    if hours:
        return f"{hours} h {minutes} min"
    if minutes:
        return f"{minutes} min {secs} s"
    return f"{secs} s"


def format_when(moment: datetime | str | None) -> str:
    """A timestamp in UTC to the second, as the API's ISO 8601 reads but shorter."""
    if moment is None or moment == "":
        return "—"
    if isinstance(moment, str):
        try:
            moment = datetime.fromisoformat(moment)
        except ValueError:
            return str(moment)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def format_percent(rate: float | None) -> str:
    return "—" if rate is None else f"{rate * 100:.1f} %"


def nav_for(session: UiSession | None, path: str) -> list[dict[str, Any]]:
    if session is None:
        return []
    items = []
    for item in NAV:
        if item.admin_only and not session.principal.is_admin:
            continue
        current = path == item.href if item.href == "/ui/" else path.startswith(item.href)
        items.append({"label": item.label, "href": item.href, "current": current})
    return items


def _flash_serializer(request: Request) -> URLSafeTimedSerializer:
    secret = ui_session.context_of(request).settings.hashing_secret
    return URLSafeTimedSerializer(
        secret, salt=_FLASH_SALT, signer_kwargs={"digest_method": hashlib.sha256}
    )


def _read_flash(request: Request) -> dict[str, str] | None:
    raw = request.cookies.get(FLASH_COOKIE)
    if not raw:
        return None
    try:
        value = _flash_serializer(request).loads(raw, max_age=FLASH_SECONDS)
    except (BadSignature, ValueError, TypeError):
        return None
    if isinstance(value, dict) and isinstance(value.get("text"), str):
        kind = value.get("kind")
        return {"text": value["text"], "kind": kind if kind in ("ok", "error") else "ok"}
    return None


def render(
    request: Request,
    template: str,
    context: Mapping[str, Any] | None = None,
    session: UiSession | None = None,
    status_code: int = 200,
    headers: Mapping[str, str] | None = None,
) -> HTMLResponse:
    """The page `template` with `context`, for the caller of `session` (None: signed out)."""
    environment: jinja2.Environment = request.app.state.ui_templates
    flash = _read_flash(request)
    values = {
        "principal": session.principal if session else None,
        "csrf_token": session.csrf_token if session else "",
        "nav": nav_for(session, request.url.path),
        "flash": flash,
        "path": request.url.path,
        **(context or {}),
    }
    body = environment.get_template(template).render(values)
    response = HTMLResponse(body, status_code=status_code, headers=headers)
    if flash is not None or FLASH_COOKIE in request.cookies:
        ui_session.clear_cookie(response, request, FLASH_COOKIE)  # shown once
    return response


def redirect(
    request: Request, url: str, flash: str | None = None, *, error: bool = False
) -> RedirectResponse:
    """303 See Other to `url` (a local path), with a one-time message for the next page."""
    response = RedirectResponse(url, status_code=303)
    if flash:
        value = _flash_serializer(request).dumps(
            {"text": flash, "kind": "error" if error else "ok"}
        )
        ui_session.set_cookie(response, request, FLASH_COOKIE, value, FLASH_SECONDS)
    return response


def login_redirect(request: Request) -> RedirectResponse:
    """To the sign-in page, which brings the caller back here after (GET pages only)."""
    url = LOGIN_URL
    if request.method == "GET" and request.url.path != LOGIN_URL:
        here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        url += "?next=" + quote(here, safe="")
    response = RedirectResponse(url, status_code=303)
    if ui_session.COOKIE in request.cookies:
        ui_session.clear_cookie(response, request, ui_session.COOKIE)
    return response


def error_page(
    request: Request,
    status: int,
    title: str,
    detail: str,
    headers: Mapping[str, str] | None = None,
    errors: list[str] | None = None,
) -> HTMLResponse:
    session = getattr(request.state, "ui_session", None)
    return render(
        request,
        "error.html",
        {"status": status, "title": title, "detail": detail, "errors": errors or []},
        session if isinstance(session, UiSession) else None,
        status_code=status,
        headers=headers,
    )


def from_error(request: Request, error: JobfleetError) -> Response:
    if isinstance(error, Unauthorized):
        return login_redirect(request)
    headers = {}
    if "retry_after" in error.extra:
        headers["Retry-After"] = str(error.extra["retry_after"])
    return error_page(request, error.status, error.title, error.detail, headers)


def _field(loc: Any) -> str:
    parts = [str(part) for part in loc if part not in ("query", "path", "body")]
    return ".".join(parts) or "request"


def invalid_request(request: Request, exc: RequestValidationError) -> Response:
    errors = [f"{_field(e.get('loc', ()))}: {e.get('msg', '')}" for e in exc.errors()]
    return error_page(
        request, 422, "Invalid request", "Some values of the request are not valid.", None, errors
    )


def _unavailable(request: Request, what: str) -> Response:
    return error_page(
        request,
        503,
        "Service unavailable",
        f"{what} is unavailable or slow to answer; try again shortly.",
        {"Retry-After": "1"},
    )


class PageRoute(APIRoute):
    """A dashboard route: errors are answered as pages, not as the API's problem JSON.
    Signed out (or a revoked key) leads to the sign-in page; a Postgres or Redis outage is a
    503 page; anything else unexpected goes on to the app's 500 handler and its log line."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handle = super().get_route_handler()

        async def handler(request: Request) -> Response:
            try:
                return await handle(request)
            except JobfleetError as exc:
                return from_error(request, exc)
            except RequestValidationError as exc:
                return invalid_request(request, exc)
            except (RedisConnectionError, RedisTimeoutError) as exc:
                log.warning("redis unavailable", extra={"error": str(exc)})
                return _unavailable(request, "Redis")
            except DBAPIError as exc:
                timed_out = getattr(exc.orig, "pgcode", None) == QUERY_CANCELED
                if not (
                    timed_out
                    or exc.connection_invalidated
                    or isinstance(exc, OperationalError | InterfaceError)
                ):
                    raise  # a failed statement is a bug: the app's catch-all logs it
                log.warning("postgres unavailable", extra={"error": type(exc.orig).__name__})
                return _unavailable(request, "Postgres")

        return handler
