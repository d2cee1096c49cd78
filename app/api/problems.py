"""RFC 9457 problem JSON for every error, mapped in one place."""

from __future__ import annotations

import json
import logging
import re
import traceback
from collections.abc import Mapping
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from starlette.exceptions import HTTPException
from starlette.responses import Response
from starlette.routing import Match

from app.domain.errors import JobfleetError

log = logging.getLogger(__name__)

MEDIA_TYPE = "application/problem+json"
_TITLES = {404: "Not found", 405: "Method not allowed", 413: "Request body too large"}
RETRY_AFTER = {"Retry-After": "1"}
QUERY_CANCELED = "57014"  # the SQLSTATE of a statement cancelled by statement_timeout


def problem_type(code: str) -> str:
    return f"urn:jobfleet:problem:{code}"


def problem_body(error: JobfleetError) -> dict[str, Any]:
    return {
        "type": problem_type(error.code),
        "title": error.title,
        "status": error.status,
        "detail": error.detail,
        "code": error.code,
        **error.extra,
    }


def invalid_item(position: int, exc: ValidationError) -> dict[str, Any]:
    """The problem of one invalid job of a batch; `loc` starts at its place in `jobs`."""
    errors: list[dict[str, Any]] = [
        {"loc": ["body", "jobs", position, *e["loc"]], "msg": e["msg"], "type": e["type"]}
        for e in exc.errors()
    ]
    return {
        "type": problem_type("validation-error"),
        "title": "Invalid request",
        "status": 422,
        "detail": "; ".join(
            ".".join(str(part) for part in e["loc"]) + ": " + str(e["msg"]) for e in errors
        ),
        "code": "validation-error",
        "errors": errors,
    }


def problem_response(
    status: int,
    code: str,
    title: str,
    detail: str,
    headers: Mapping[str, str] | None = None,
    **extra: Any,
) -> Response:
    body = {
        "type": problem_type(code),
        "title": title,
        "status": status,
        "detail": detail,
        "code": code,
        **extra,
    }
    return Response(_encode(body), status_code=status, media_type=MEDIA_TYPE, headers=headers)


def _encode(body: dict[str, Any]) -> bytes:
    try:
        return orjson.dumps(body)
    except TypeError:
        # A field name or value echoed from the request that orjson refuses (a lone surrogate,
        # an integer past 64 bits): the error must still be told, so in escaped ASCII JSON.
        return json.dumps(body, ensure_ascii=True, default=str).encode()


def from_error(error: JobfleetError) -> Response:
    headers = {}
    if "retry_after" in error.extra:
        headers["Retry-After"] = str(error.extra["retry_after"])
    return problem_response(
        error.status,
        error.code,
        error.title,
        error.detail,
        headers=headers,
        **error.extra,
    )


def _validation_errors(exc: RequestValidationError) -> list[dict[str, Any]]:
    errors = []
    for e in exc.errors():
        loc, msg = list(e.get("loc", ())), str(e.get("msg", ""))
        if e.get("type") == "json_invalid" and loc[:1] == ["body"]:
            # FastAPI puts the character position in `loc`; it belongs in the message. (A query
            # parameter holding JSON text says what is wrong with it itself.)
            position = loc[1] if len(loc) > 1 else 0
            reason = (e.get("ctx") or {}).get("error", "")
            loc, msg = (
                ["body"],
                f"not valid JSON: {reason}" + (f" (at character {position})" if position else ""),
            )
        errors.append({"loc": loc, "msg": msg, "type": e.get("type", "")})
    return errors


def invalid_request(errors: list[dict[str, Any]]) -> Response:
    where = ", ".join(".".join(str(p) for p in e["loc"]) + ": " + e["msg"] for e in errors)
    return problem_response(
        422, "validation-error", "Invalid request", where or "invalid request", errors=errors
    )


def install(app: FastAPI) -> None:
    @app.exception_handler(JobfleetError)
    async def _jobfleet_error(_: Request, exc: JobfleetError) -> Response:
        return from_error(exc)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> Response:
        return invalid_request(_validation_errors(exc))

    @app.exception_handler(HTTPException)
    async def _http(request: Request, exc: HTTPException) -> Response:
        code = {404: "not-found", 405: "method-not-allowed"}.get(exc.status_code, "http-error")
        title = _TITLES.get(exc.status_code, "HTTP error")
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            headers["Allow"] = _allowed_methods(request)
        return problem_response(exc.status_code, code, title, str(exc.detail), headers=headers)

    @app.exception_handler(DBAPIError)
    async def _postgres(_: Request, exc: DBAPIError) -> Response:
        if getattr(exc.orig, "pgcode", None) == QUERY_CANCELED:
            log.warning(
                "statement timeout",
                extra={"action": "statement_timeout", "statement": _statement(exc)},
            )
            return problem_response(
                503,
                "statement-timeout",
                "Service unavailable",
                "Postgres did not answer within API_STATEMENT_TIMEOUT_MS; retry shortly",
                headers=RETRY_AFTER,
            )
        if not exc.connection_invalidated and not isinstance(
            exc, OperationalError | InterfaceError
        ):
            raise exc  # a failed statement is a bug: the catch-all logs it and answers 500
        log.warning("postgres unavailable", extra={"error": _postgres_error(exc)})
        return problem_response(
            503,
            "postgres-unavailable",
            "Service unavailable",
            "Postgres is unavailable; retry shortly",
            headers=RETRY_AFTER,
        )

    @app.exception_handler(RedisConnectionError)
    @app.exception_handler(RedisTimeoutError)
    async def _redis_down(_: Request, exc: RedisError) -> Response:
        log.warning("redis unavailable", extra={"error": str(exc)})
        return problem_response(
            503,
            "redis-unavailable",
            "Service unavailable",
            "Redis is unavailable; retry shortly",
            headers=RETRY_AFTER,
        )


def _allowed_methods(request: Request) -> str:
    """Every method of the path: each route has one, so Starlette's 405 names only the first."""
    methods: set[str] = set()
    for route in request.app.routes:
        match, _ = route.matches(request.scope)
        if match is not Match.NONE:
            methods |= getattr(route, "methods", None) or set()
    return ", ".join(sorted(methods))


def internal_error() -> Response:
    return problem_response(500, "internal-error", "Internal error", "an unexpected error")


def log_unexpected(exc: BaseException) -> None:
    """Log an error no handler answered, once, with its traceback.

    A failed statement is logged without its values: psycopg2 binds parameters on the client,
    so Postgres' message quotes the statement with the payload in it.
    """
    if isinstance(exc, DBAPIError):
        log.error(
            "unhandled error",
            extra={
                "error": _postgres_error(exc),
                "statement": _statement(exc),
                "traceback": "".join(traceback.format_tb(exc.__traceback__)),
            },
        )
    else:
        log.error("unhandled error", exc_info=exc)


_QUOTED = re.compile(r'"[^"]*"')


def _postgres_error(exc: DBAPIError) -> str:
    """The error class, SQLSTATE and first line of Postgres' message, quoted values cut out."""
    orig = exc.orig
    diag = getattr(orig, "diag", None)
    primary = getattr(diag, "message_primary", None) or str(orig).split("\n", 1)[0]
    sqlstate = getattr(orig, "pgcode", None) or "?"
    message = _QUOTED.sub('"..."', primary)
    return f"{type(orig).__name__} (SQLSTATE {sqlstate}): {message}"


def _statement(exc: DBAPIError) -> str:
    """The statement's text with its placeholders, never its values."""
    return " ".join(str(exc.statement or "").split())[:2000]
