"""ASGI middleware: request ids, the one reply and log line of an unexpected error, and the
body size cap. Plain ASGI, no per-request tasks."""

from __future__ import annotations

import logging
import re
import time
import uuid

from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api.problems import internal_error, log_unexpected, problem_response
from app.logging import log_context
from app.metrics import metrics

log = logging.getLogger("app.access")

_VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
# The client picks the method token (h11 takes any): other methods share one label value.
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return str(value.decode("latin-1"))
    return None


class RequestContext:
    """Takes X-Request-ID from the caller (or makes one), logs with it, and echoes it back."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = _header(scope, b"x-request-id")
        request_id = given if given and _VALID_REQUEST_ID.match(given) else uuid.uuid4().hex
        status = 500
        started = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [
                    *message["headers"],
                    (b"x-request-id", request_id.encode()),
                ]
            await send(message)

        with log_context(request_id=request_id):
            try:
                await self.app(scope, receive, send_with_id)
            finally:
                elapsed = time.perf_counter() - started
                # The route template (/jobs/{job_id}), never the raw path: bounded labels.
                route = getattr(scope.get("route"), "path", "unmatched")
                method = scope["method"] if scope["method"] in _METHODS else "other"
                observed = metrics()
                observed.http_requests.labels(method, route, str(status)).inc()
                observed.http_latency.labels(method, route).observe(elapsed)
                log.info(
                    "request",
                    extra={
                        "method": scope["method"],
                        "path": scope["path"],
                        "route": route,
                        "status": status,
                        "duration_ms": round(elapsed * 1000, 2),
                    },
                )


class InternalErrors:
    """Answers 500 problem JSON for an exception no handler took, and logs it once.

    Starlette's outermost middleware would answer too, but then raise the exception again
    for the server to log: every such error would be logged twice, the second time without
    the request id.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        response_started = False

        async def tracking_send(message: Message) -> None:
            nonlocal response_started
            if message["type"] == "http.response.start":
                response_started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception as exc:  # noqa: BLE001 - the last resort: answered and logged here
            log_unexpected(exc)
            if not response_started:  # else too late to reply: the server drops the connection
                await internal_error()(scope, receive, send)


class BodySizeLimit:
    """Refuses bodies over the cap with 413 before the application parses a byte of them."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    def _too_large(self) -> Response:
        return problem_response(
            413,
            "payload-too-large",
            "Request body too large",
            f"the request body is larger than {self.max_bytes} bytes (MAX_BODY_BYTES)",
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _header(scope, b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._too_large()(scope, receive, send)
            return

        received = 0
        response_started = False
        refused = False

        async def guarded_send(message: Message) -> None:
            nonlocal response_started
            if refused:
                return  # the 413 has been sent; whatever the application says now is moot
            if message["type"] == "http.response.start":
                response_started = True
            await send(message)

        async def counting_receive() -> Message:
            # A streamed body with no Content-Length: once it passes the cap, answer 413 and
            # tell the application the client went away, so it stops reading.
            nonlocal received, refused
            message = await receive()
            if message["type"] == "http.request" and not refused:
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    if not response_started:
                        await self._too_large()(scope, receive, send)
                    refused = True
                    return {"type": "http.disconnect"}
            return message

        await self.app(scope, counting_receive, guarded_send)
