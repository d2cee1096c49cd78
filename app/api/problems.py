"""RFC 9457 problem JSON for every error, mapped in one place."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import orjson
import redis
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from sqlalchemy.exc import DBAPIError
from starlette.exceptions import HTTPException
from starlette.responses import Response

from app.domain.errors import JobfleetError

log = logging.getLogger(__name__)

MEDIA_TYPE = "application/problem+json"
_TITLES = {404: "Not found", 405: "Method not allowed", 413: "Request body too large"}


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
    return Response(orjson.dumps(body), status_code=status, media_type=MEDIA_TYPE, headers=headers)


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
    return [
        {
            "loc": list(e.get("loc", ())),
            "msg": e.get("msg", ""),
            "type": e.get("type", ""),
        }
        for e in exc.errors()
    ]


def install(app: FastAPI) -> None:
    @app.exception_handler(JobfleetError)
    async def _jobfleet_error(_: Request, exc: JobfleetError) -> Response:
        return from_error(exc)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> Response:
        errors = _validation_errors(exc)
        where = ", ".join(".".join(str(p) for p in e["loc"]) + ": " + e["msg"] for e in errors)
        return problem_response(
            422,
            "validation-error",
            "Invalid request",
            where or "invalid request",
            errors=errors,
        )

    @app.exception_handler(HTTPException)
    async def _http(_: Request, exc: HTTPException) -> Response:
        code = {404: "not-found", 405: "method-not-allowed"}.get(exc.status_code, "http-error")
        title = _TITLES.get(exc.status_code, "HTTP error")
        return problem_response(exc.status_code, code, title, str(exc.detail), headers=exc.headers)

    @app.exception_handler(DBAPIError)
    async def _postgres_down(_: Request, exc: DBAPIError) -> Response:
        if not exc.connection_invalidated and not _is_connection_error(exc):
            raise exc
        log.warning("postgres unavailable", extra={"error": str(exc.orig)})
        return problem_response(
            503,
            "postgres-unavailable",
            "Service unavailable",
            "Postgres is unavailable; retry shortly",
            headers={"Retry-After": "1"},
        )

    @app.exception_handler(redis.ConnectionError)
    async def _redis_down(_: Request, exc: redis.ConnectionError) -> Response:
        log.warning("redis unavailable", extra={"error": str(exc)})
        return problem_response(
            503,
            "redis-unavailable",
            "Service unavailable",
            "Redis is unavailable; retry shortly",
            headers={"Retry-After": "1"},
        )

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> Response:
        log.exception("unhandled error", exc_info=exc)
        return problem_response(500, "internal-error", "Internal error", "an unexpected error")


def _is_connection_error(exc: DBAPIError) -> bool:
    from sqlalchemy.exc import InterfaceError, OperationalError

    return isinstance(exc, OperationalError | InterfaceError)
