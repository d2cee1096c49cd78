"""Body size cap (413 before parsing) and per-key rate limits (429, then recovery)."""

from __future__ import annotations

import socket
from typing import Any

import httpx
from fastapi.testclient import TestClient
from sqlalchemy import text

from app.main import create_app
from app.services.context import Context
from app.settings import Settings
from tests.helpers import LiveAPI, wait_until

TWO_MB = 2 * 1024 * 1024


def test_two_megabyte_body_gets_413_without_being_read(
    live_api: LiveAPI, make_key: Any, ctx: Context
) -> None:
    """Send only the headers of a 2 MB request: a 413 that arrives before any of the body is
    sent proves the server answered without reading (or parsing) it."""
    key = make_key("acme")
    head = (
        "POST /jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Authorization: Bearer {key}\r\nContent-Length: {TWO_MB}\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", live_api.port), timeout=10) as sock:
        sock.sendall(head.encode())
        reply = b""
        while b"\r\n\r\n" not in reply:
            chunk = sock.recv(4096)
            assert chunk, "connection closed without a reply"
            reply += chunk
    status_line, _, rest = reply.partition(b"\r\n")
    assert status_line.startswith(b"HTTP/1.1 413")
    assert b"application/problem+json" in rest.lower()
    with ctx.db.transaction() as session:
        assert session.scalar(text("SELECT count(*) FROM jobs")) == 0


def test_streamed_body_over_the_cap_gets_413(live_api: LiveAPI, make_key: Any) -> None:
    """No Content-Length (chunked): the body is cut off once it passes the cap."""

    def chunks() -> Any:
        yield b'{"task": "echo", "payload": "'
        for _ in range(64):
            yield b"x" * 32_768
        yield b'"}'

    response = httpx.post(
        f"{live_api.url}/jobs",
        content=chunks(),
        headers={"Authorization": f"Bearer {make_key('acme')}", "Content-Type": "application/json"},
        timeout=30,
    )
    assert response.status_code == 413
    assert response.json()["code"] == "payload-too-large"


def test_a_body_under_the_cap_is_accepted(client: TestClient, producer: dict[str, str]) -> None:
    payload = {"blob": "x" * 500_000}
    response = client.post("/jobs", json={"task": "echo", "payload": payload}, headers=producer)
    assert response.status_code == 201


def test_rate_limit_trips_with_retry_after_and_recovers(
    settings: Settings, ctx: Context, make_key: Any
) -> None:
    limited = settings.model_copy(update={"rate_limit_submit": "5/2 seconds"})
    headers = {"Authorization": f"Bearer {make_key('acme')}"}
    other = {"Authorization": f"Bearer {make_key('acme')}"}
    with TestClient(create_app(limited)) as client:
        statuses = [
            client.post("/jobs", json={"task": "echo"}, headers=headers).status_code
            for _ in range(5)
        ]
        assert statuses == [201] * 5
        tripped = client.post("/jobs", json={"task": "echo"}, headers=headers)
        assert tripped.status_code == 429
        assert tripped.headers["content-type"] == "application/problem+json"
        assert tripped.json()["code"] == "rate-limited"
        assert 1 <= int(tripped.headers["Retry-After"]) <= 2
        # Limits are per key: another key is unaffected, and reads have their own budget.
        assert client.post("/jobs", json={"task": "echo"}, headers=other).status_code == 201
        assert client.get("/jobs", headers=headers).status_code == 200
        wait_until(
            lambda: client.post("/jobs", json={"task": "echo"}, headers=headers).status_code == 201,
            timeout=10,
            interval=0.2,
        )
    with ctx.db.transaction() as session:
        assert session.scalar(text("SELECT count(*) FROM jobs")) >= 7
