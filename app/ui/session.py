"""The dashboard's session: a signed, expiring cookie that names an API key by its digest (the
value Postgres keeps), never by the key itself, and the dependencies that turn it into the
caller of a page.

Every page checks the session again: the signature and age of the cookie, that it has not
signed out (a marker in Redis), and that its key is still active (the API's own key cache, so
a revoked key stops working within the same few seconds as on the API). What the caller may
see and do then follows the key's scopes and tenant exactly as on the API, under the same
per-key rate limits.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import time
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Request
from itsdangerous import BadSignature, URLSafeTimedSerializer
from starlette.datastructures import FormData
from starlette.responses import Response

from app.domain.errors import Unauthorized
from app.logging import bind
from app.services import auth, limits, sessions
from app.services.auth import Principal, Scope
from app.services.context import Context
from app.settings import Environment, Settings
from app.ui import csrf

COOKIE = "jf_session"
# Cookies are scoped to the dashboard: the API never reads them, and never sees them.
COOKIE_PATH = "/ui"
_SALT = "jobfleet.ui.session"
_SESSION_ID = re.compile(r"^[A-Za-z0-9_-]{16,64}$")
_DIGEST = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class UiSession:
    """A signed-in caller of the dashboard: its key's principal, and the session's id (the
    CSRF token of its forms is derived from it)."""

    principal: Principal
    session_id: str
    issued_at: int  # Unix time of the sign-in
    csrf_token: str


def context_of(request: Request) -> Context:
    context: Context = request.app.state.context
    return context


def _serializer(settings: Settings) -> URLSafeTimedSerializer:
    # HMAC-SHA256 under a key derived from API_KEY_SECRET for this one purpose (the salt): no
    # second secret to deploy, and rotating API_KEY_SECRET ends every session with every key.
    return URLSafeTimedSerializer(
        settings.hashing_secret,
        salt=_SALT,
        signer_kwargs={"key_derivation": "hmac", "digest_method": hashlib.sha256},
    )


def seal(settings: Settings, digest: str) -> tuple[str, str]:
    """A new session of the key with `digest`: (cookie value, session id)."""
    session_id = secrets.token_urlsafe(24)
    return _serializer(settings).dumps({"k": digest, "s": session_id}), session_id


def open_cookie(settings: Settings, value: str) -> tuple[str, str, int] | None:
    """(key digest, session id, issued at) of a cookie this deployment signed and that has not
    expired; None for anything else."""
    try:
        payload, signed_at = _serializer(settings).loads(
            value, max_age=settings.ui_session_seconds, return_timestamp=True
        )
    except (BadSignature, ValueError, TypeError):  # SignatureExpired is a BadSignature
        return None
    if not isinstance(payload, dict):
        return None
    digest, session_id = payload.get("k"), payload.get("s")
    if not (isinstance(digest, str) and _DIGEST.match(digest)):
        return None
    if not (isinstance(session_id, str) and _SESSION_ID.match(session_id)):
        return None
    return digest, session_id, int(signed_at.timestamp())


def secure_cookies(request: Request, settings: Settings) -> bool:
    """Cookies carry `Secure` in production always (TLS ends at a proxy in front, which the
    app may see as plain http), elsewhere when the request came over https: a developer's
    http://127.0.0.1 sign-in works, a production one never travels in clear text."""
    return settings.environment is Environment.PRODUCTION or request.url.scheme == "https"


def set_cookie(
    response: Response, request: Request, name: str, value: str, max_age: int | None
) -> None:
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        path=COOKIE_PATH,
        secure=secure_cookies(request, context_of(request).settings),
        httponly=True,
        samesite="strict",
    )


def clear_cookie(response: Response, request: Request, name: str) -> None:
    response.delete_cookie(
        name,
        path=COOKIE_PATH,
        secure=secure_cookies(request, context_of(request).settings),
        httponly=True,
        samesite="strict",
    )


def sign_in(response: Response, request: Request, digest: str) -> None:
    """Put a new session of the key with `digest` on `response`."""
    settings = context_of(request).settings
    value, _ = seal(settings, digest)
    set_cookie(response, request, COOKIE, value, settings.ui_session_seconds)


def current(request: Request) -> UiSession:
    """The caller of this request, checked (blocking: Redis, and Postgres for a key not seen
    in the last few seconds); Unauthorized when there is none, which a page answers with the
    sign-in page."""
    ctx = context_of(request)
    raw = request.cookies.get(COOKIE)
    opened = open_cookie(ctx.settings, raw) if raw else None
    if opened is None:
        raise Unauthorized("sign in to use the dashboard")
    digest, session_id, issued_at = opened
    if sessions.session_ended(ctx, session_id):
        raise Unauthorized("this session has signed out: sign in again")
    principal = auth.authenticate_digest(ctx, digest)
    session = UiSession(principal, session_id, issued_at, csrf.token(ctx.settings, session_id))
    # Error pages show the navigation of whoever was signed in.
    request.state.ui_session = session
    bind(tenant=principal.tenant)
    return session


def seconds_left(request: Request, session: UiSession) -> int:
    lifetime = context_of(request).settings.ui_session_seconds
    return max(0, session.issued_at + lifetime - int(time.time()))


def sign_out(request: Request, session: UiSession) -> None:
    """End `session` for every copy of its cookie (blocking: Redis)."""
    sessions.end_session(context_of(request), session.session_id, seconds_left(request, session))


async def posted_form(request: Request) -> FormData:
    """The fields of a posted form (application/x-www-form-urlencoded), read once per
    request; any other body is an empty form (and so fails its CSRF check)."""
    return await csrf.read_form(request)


PostedForm = Annotated[FormData, Depends(posted_form)]


def page_caller(scope: Scope, action: str, *, writes: bool = False) -> Any:
    """A dependency: the signed-in caller, holding `scope`, within its `action` rate limit;
    `writes`: a POST whose form must carry the session's CSRF token. Synchronous: FastAPI runs
    it in the thread pool, where its Redis and Postgres checks may block."""

    def read_page(request: Request) -> UiSession:
        session = current(request)
        _allow(request, session, scope, action)
        return session

    def write_page(request: Request, form: PostedForm) -> UiSession:
        session = current(request)
        csrf.verify(context_of(request).settings, session.session_id, form)
        _allow(request, session, scope, action)
        return session

    return write_page if writes else read_page


def _allow(request: Request, session: UiSession, scope: Scope, action: str) -> None:
    session.principal.require(scope)
    ctx = context_of(request)
    if limits.enabled(ctx):
        limits.hit(ctx, session.principal, action)


# The callers of pages, named as the API names its callers (app/api/deps.py).
Reader = Annotated[UiSession, Depends(page_caller(Scope.PRODUCER, "read"))]
Writer = Annotated[UiSession, Depends(page_caller(Scope.PRODUCER, "write", writes=True))]
Admin = Annotated[UiSession, Depends(page_caller(Scope.ADMIN, "admin"))]
AdminWriter = Annotated[UiSession, Depends(page_caller(Scope.ADMIN, "admin", writes=True))]
