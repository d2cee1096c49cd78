"""CSRF protection of the dashboard's forms.

A form's token is an HMAC of its session's id under a key of the server's (a synchronizer
token that needs no storage): a page of another site cannot read it, and cannot compute it
without the server's secret. Before sign-in there is no session, so the sign-in form is bound
the same way to a random value in a cookie of its own (`jf_login`), set by the form's page:
a cross-site post carries neither that cookie (SameSite=Strict) nor a token matching it, and a
cookie planted by a neighbouring site cannot be matched without the secret either.

The session cookie is SameSite=Strict as well; the token is the defence that does not depend
on the browser.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from urllib.parse import parse_qsl

from fastapi import Request
from starlette.datastructures import FormData, UploadFile

from app.domain.errors import Forbidden
from app.settings import Settings

LOGIN_COOKIE = "jf_login"
FIELD = "csrf_token"
FORM_TYPE = "application/x-www-form-urlencoded"
# No form of the dashboard has more than a handful of fields.
MAX_FIELDS = 200


class CsrfRefused(Forbidden):
    """The form carried no valid CSRF token (it came from another site, or from a page older
    than the current sign-in): reload the page and send the form again."""

    code = "csrf-refused"
    title = "CSRF check failed"


def _mac(settings: Settings, purpose: str, value: str) -> str:
    message = f"jobfleet.ui.csrf:{purpose}:{value}".encode()
    return hmac.new(settings.hashing_secret, message, hashlib.sha256).hexdigest()


def token(settings: Settings, session_id: str) -> str:
    """The CSRF token of every form of the session `session_id`."""
    return _mac(settings, "session", session_id)


def new_login_nonce() -> str:
    return secrets.token_urlsafe(24)


def login_token(settings: Settings, nonce: str) -> str:
    """The CSRF token of the sign-in form, bound to the `jf_login` cookie's `nonce`."""
    return _mac(settings, "login", nonce)


def _given(form: FormData) -> str:
    value = form.get(FIELD)
    return value if isinstance(value, str) else ""


def verify(settings: Settings, session_id: str, form: FormData) -> None:
    """CsrfRefused unless `form` carries the token of session `session_id`."""
    if not hmac.compare_digest(_given(form).encode(), token(settings, session_id).encode()):
        raise CsrfRefused()


def verify_login(settings: Settings, nonce: str | None, form: FormData) -> None:
    """CsrfRefused unless `form` carries the sign-in token of the `jf_login` cookie."""
    expected = login_token(settings, nonce) if nonce else ""
    if not expected or not hmac.compare_digest(_given(form).encode(), expected.encode()):
        raise CsrfRefused()


async def read_form(request: Request) -> FormData:
    """The fields of an application/x-www-form-urlencoded body (the only kind the dashboard's
    forms send; nothing is uploaded), parsed here rather than by a multipart parser: the
    body's size is capped by MAX_BODY_BYTES before this reads it. Any other body is an empty
    form. The last of repeated fields wins for `get`; `getlist` has them all."""
    cached = getattr(request.state, "ui_form", None)
    if isinstance(cached, FormData):
        return cached
    content_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    pairs: list[tuple[str, str | UploadFile]] = []
    if content_type == FORM_TYPE:
        body = await request.body()
        try:
            text = body.decode("utf-8")
            pairs = list(
                parse_qsl(
                    text,
                    keep_blank_values=True,
                    max_num_fields=MAX_FIELDS,
                    encoding="utf-8",
                    errors="strict",
                )
            )
        except (UnicodeDecodeError, ValueError):
            pairs = []  # not a form this dashboard sent: it fails its CSRF check
    form = FormData(pairs)
    request.state.ui_form = form
    return form
