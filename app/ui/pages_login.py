"""Sign-in with an API key, and sign-out."""

from __future__ import annotations

import re
from typing import Annotated
from urllib.parse import urlsplit

from fastapi import APIRouter, Query, Request
from starlette.responses import Response

from app.domain.errors import Unauthorized
from app.services import auth
from app.services.auth import Scope
from app.ui import csrf
from app.ui import session as ui_session
from app.ui.render import PageRoute, redirect, render
from app.ui.session import PostedForm

router = APIRouter(route_class=PageRoute)

HOME = "/ui/"
# Where `next` may lead after sign-in: a dashboard path on this site, nothing else.
_LOCAL = re.compile(r"^/ui(/[A-Za-z0-9._~%!$&'()*+,;=:@/-]*)?$")
MAX_NEXT = 2000
MAX_KEY = 512  # a key is 46 characters; anything much longer is not one


def safe_next(target: str | None) -> str:
    """`target` when it is a local dashboard URL (path and query), else the overview: the
    sign-in page never sends anyone to another site (open redirect)."""
    if not target or len(target) > MAX_NEXT:
        return HOME
    if any(ord(c) < 0x21 or c in '\\"<>`' for c in target):
        return HOME
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or parts.fragment or not _LOCAL.match(parts.path):
        return HOME
    if "/../" in parts.path + "/" or "/./" in parts.path + "/" or "%" in parts.path:
        return HOME  # no way out of /ui by dot segments, plain or encoded
    return target


def lifetime(seconds: int) -> str:
    """8 hours, 90 minutes: how long a sign-in lasts, in words."""
    count, unit = (seconds // 3600, "hour") if seconds % 3600 == 0 else (seconds // 60, "minute")
    return f"{count} {unit}{'' if count == 1 else 's'}"


def _login_page(
    request: Request, next_url: str, status: int = 200, error: str | None = None
) -> Response:
    """The sign-in form, bound to a fresh `jf_login` nonce (its CSRF token)."""
    settings = ui_session.context_of(request).settings
    nonce = csrf.new_login_nonce()
    response = render(
        request,
        "login.html",
        {
            "login_token": csrf.login_token(settings, nonce),
            "next": next_url,
            "error": error,
            "session_hours": lifetime(settings.ui_session_seconds),
        },
        status_code=status,
    )
    ui_session.set_cookie(response, request, csrf.LOGIN_COOKIE, nonce, None)
    return response


@router.get("/login")
def login_form(
    request: Request,
    next_url: Annotated[str | None, Query(alias="next")] = None,
) -> Response:
    return _login_page(request, safe_next(next_url))


@router.post("/login")
def login(request: Request, form: PostedForm) -> Response:
    """A valid producer or admin key starts a session; anything else shows the form again."""
    ctx = ui_session.context_of(request)
    given = form.get("next")
    next_url = safe_next(given if isinstance(given, str) else None)
    csrf.verify_login(ctx.settings, request.cookies.get(csrf.LOGIN_COOKIE), form)
    key = form.get("key")
    key = key.strip() if isinstance(key, str) else ""
    if not key or len(key) > MAX_KEY or "\x00" in key:
        return _login_page(request, next_url, 401, "That key was not accepted.")
    try:
        principal = auth.authenticate(ctx, f"Bearer {key}")
    except Unauthorized:
        return _login_page(request, next_url, 401, "That key was not accepted.")
    if not ({Scope.PRODUCER, Scope.ADMIN} & principal.scopes):
        return _login_page(
            request,
            next_url,
            403,
            "That key was not accepted: the dashboard needs a key with the producer or admin "
            "scope.",
        )
    response = redirect(request, next_url)
    ui_session.sign_in(response, request, auth.key_digest(ctx, key))
    ui_session.clear_cookie(response, request, csrf.LOGIN_COOKIE)
    return response


@router.post("/logout")
def logout(request: Request, form: PostedForm) -> Response:
    """Ends the session for every copy of its cookie. A session that has already ended (or
    expired) just goes to the sign-in page."""
    try:
        session = ui_session.current(request)
    except Unauthorized:
        session = None
    if session is not None:
        csrf.verify(ui_session.context_of(request).settings, session.session_id, form)
        ui_session.sign_out(request, session)
    response = redirect(request, "/ui/login", "Signed out.")
    ui_session.clear_cookie(response, request, ui_session.COOKIE)
    return response
