"""Built-in tasks run by a real fleet (burst runs): http against a local server, flaky, echo."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from app.services.context import Context
from app.settings import Settings
from tests.fleet_support import attempts, burst, job_row, statuses, submit
from tests.helpers import free_port


class _Handler(BaseHTTPRequestHandler):
    received: list[dict[str, Any]] = []

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        _Handler.received.append(
            {"path": self.path, "body": body, "token": self.headers["X-Token"]}
        )
        status = 200 if self.path == "/ok" else 503
        reply = json.dumps({"seen": body}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def webhook_server() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_http_task_covers_success_server_error_and_unreachable(
    settings: Settings, ctx: Context, webhook_server: str
) -> None:
    # The fleet's settings allow the local server by name, not by address.
    local = webhook_server.replace("127.0.0.1", "localhost")

    def webhook(url: str) -> dict[str, Any]:
        return {"url": url, "json": {"order": 7}, "headers": {"X-Token": "t-1"}, "timeout": 5}

    def call(url: str, max_retries: int = 0) -> str:
        return submit(ctx, task="http", payload=webhook(url), max_retries=max_retries)

    ok = call(f"{local}/ok")
    error = call(f"{local}/down")
    unreachable = call(f"http://localhost:{free_port()}/x")
    refused = call(f"{webhook_server}/refused", max_retries=3)
    assert burst(settings, threads=2, HTTP_TASK_ALLOW="localhost") == 0
    assert statuses(ctx) == {"completed": 1, "failed": 3}

    assert job_row(ctx, ok).status == "completed"
    assert job_row(ctx, ok).result == {"status": 200, "body": {"seen": {"order": 7}}}
    assert {"path": "/ok", "body": {"order": 7}, "token": "t-1"} in _Handler.received
    assert job_row(ctx, error).status == "failed"
    assert "-> 503" in job_row(ctx, error).last_error
    assert job_row(ctx, unreachable).status == "failed"
    assert "ConnectError" in job_row(ctx, unreachable).last_error
    assert [a.outcome for a in attempts(ctx, unreachable)] == ["failed"]
    # Its address is not on the allow-list: refused at once, never retried, never connected.
    assert job_row(ctx, refused).status == "failed"
    assert "refused by the destination policy" in job_row(ctx, refused).last_error
    assert [a.outcome for a in attempts(ctx, refused)] == ["failed"]
    assert "/refused" not in [r["path"] for r in _Handler.received]


def test_echo_and_flaky_record_results_and_errors(settings: Settings, ctx: Context) -> None:
    echo = submit(ctx, task="echo", payload={"hello": ["world"]})
    flaky = submit(ctx, task="flaky", payload={"failures": 0})
    assert burst(settings, threads=1) == 0
    assert statuses(ctx) == {"completed": 2}
    assert job_row(ctx, echo).result == {"hello": ["world"]}
    assert job_row(ctx, flaky).result == {"attempt": 1}
