"""The OpenAPI document says every status code and content type a route can answer.

FastAPI documents what a route returns and a 422 in its own shape. The errors every route
shares (a missing key, a rate limit, a body too large, Postgres or Redis down) are raised by
dependencies and middleware it cannot see, and every error is problem JSON. So the document
FastAPI generates is completed here, once, from what each operation declares: a security
requirement means 401, 403 and 429; parameters or a body mean 422; a body means 413; every
operation but /health may answer 503. Error replies a route declares itself (404, 409) get the
problem schema and content type. Routes only describe what is their own.
"""

from __future__ import annotations

import copy
from typing import Any

from fastapi import FastAPI

from app.api.problems import MEDIA_TYPE

# What a route passes as `responses=`: its own error replies, described in its own words.
Responses = dict[int | str, dict[str, Any]]

PROBLEM = "#/components/schemas/Problem"
VALIDATION_PROBLEM = "#/components/schemas/ValidationProblem"

_SCHEMAS: dict[str, Any] = {
    "Problem": {
        "title": "Problem",
        "description": (
            "RFC 9457 problem details. `type` is `urn:jobfleet:problem:<code>`; clients branch "
            "on `code`. Some codes add fields (`job_id`, `job_status`, `retry_after`, `checks`)."
        ),
        "type": "object",
        "required": ["type", "title", "status", "detail", "code"],
        "properties": {
            "type": {"type": "string"},
            "title": {"type": "string"},
            "status": {"type": "integer", "minimum": 400, "maximum": 599},
            "detail": {"type": "string"},
            "code": {"type": "string"},
            "errors": {"type": "array", "items": {"$ref": "#/components/schemas/FieldError"}},
        },
        "additionalProperties": True,
    },
    "ValidationProblem": {
        "title": "ValidationProblem",
        "description": "A 422 problem: `errors` holds one item per invalid field.",
        "allOf": [{"$ref": PROBLEM}, {"type": "object", "required": ["errors"]}],
    },
    "FieldError": {
        "title": "FieldError",
        "type": "object",
        "required": ["loc", "msg", "type"],
        "properties": {
            "loc": {
                "description": "Where: `body`, `query`, `path` or `header`, then the field",
                "type": "array",
                "items": {"anyOf": [{"type": "string"}, {"type": "integer"}]},
            },
            "msg": {"type": "string"},
            "type": {"type": "string"},
        },
    },
}

_RETRY_AFTER = {
    "description": "Seconds to wait before trying again",
    "schema": {"type": "integer", "minimum": 1},
}
_REQUEST_ID = {
    "description": "The request id: the caller's X-Request-ID, or one the API made",
    "schema": {"type": "string"},
}

_SHARED: dict[int, dict[str, Any]] = {
    401: {"description": "No valid API key (`unauthorized`)"},
    403: {"description": "The API key lacks the scope this route needs (`forbidden`)"},
    413: {"description": "The body is larger than MAX_BODY_BYTES (`payload-too-large`)"},
    422: {
        "description": (
            "Invalid body, query, path or header (`validation-error`, with `errors`); a body "
            'that is not JSON, or too deeply nested to parse, is one too (`loc` is `["body"]`)'
        )
    },
    429: {
        "description": "Over this API key's rate limit (`rate-limited`): wait Retry-After seconds",
        "headers": {"Retry-After": {**_RETRY_AFTER, "required": True}},
    },
    503: {
        "description": (
            "Postgres or Redis unavailable, or a statement ran longer than "
            "API_STATEMENT_TIMEOUT_MS (`postgres-unavailable`, `redis-unavailable`, "
            "`statement-timeout`; `not-ready` from /ready): retry later"
        ),
        "headers": {"Retry-After": _RETRY_AFTER},
    },
}

_NO_BACKEND = {("get", "/health")}  # answers without asking Postgres or Redis
# Needs an admin key only when METRICS_PUBLIC is false: either way is documented.
_KEY_OPTIONAL = {("get", "/metrics")}
_METRICS = ("get", "/metrics")


def install(app: FastAPI) -> None:
    """Make app.openapi() return the completed document (built once, then cached)."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = complete(generate())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def complete(document: dict[str, Any]) -> dict[str, Any]:
    components = document.setdefault("components", {}).setdefault("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        components.pop(name, None)
    components.update(_SCHEMAS)
    for path, operations in document.get("paths", {}).items():
        for method, operation in operations.items():
            _complete_operation(method, path, operation)
    return document


def _complete_operation(method: str, path: str, operation: dict[str, Any]) -> None:
    responses: dict[str, Any] = operation.setdefault("responses", {})
    codes: set[int] = set()
    if operation.get("security"):
        codes |= {401, 403, 429}
        if (method, path) in _KEY_OPTIONAL:
            operation["security"] = [{}, *operation["security"]]
    if operation.get("parameters") or operation.get("requestBody"):
        codes.add(422)
    if operation.get("requestBody"):
        codes.add(413)
    if (method, path) not in _NO_BACKEND:
        codes.add(503)
    for code in codes:
        # A route's own description of a shared code wins; the rest is filled in.
        responses[str(code)] = {**copy.deepcopy(_SHARED[code]), **_own(responses.get(str(code)))}
    operation["responses"] = responses = dict(sorted(responses.items()))
    for status, response in responses.items():
        code = int(status)
        if code >= 400:
            schema = VALIDATION_PROBLEM if code == 422 else PROBLEM
            response["content"] = {MEDIA_TYPE: {"schema": {"$ref": schema}}}
        response.setdefault("headers", {})["X-Request-ID"] = {**_REQUEST_ID, "required": True}
    if (method, path) == _METRICS:
        responses["200"]["content"] = {
            "text/plain": {"schema": {"type": "string", "description": "Prometheus text"}}
        }


def _own(response: dict[str, Any] | None) -> dict[str, Any]:
    """What a route said itself about a shared code: its description, if not FastAPI's."""
    if not response or response.get("description") in (None, "Validation Error"):
        return {}
    return {"description": response["description"]}
