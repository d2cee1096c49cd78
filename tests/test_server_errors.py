"""What the API does when something fails on its side: a statement past its timeout is a 503
with Retry-After; an unexpected error is one 500 problem reply and one log line with its
traceback, and a failed statement's log carries no value of the request."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import text

from app.api.deps import ContextDep
from app.api.problems import problem_response
from app.logging import configure_logging
from app.main import create_app
from app.services.context import Context
from app.settings import Settings

SECRET = "secret-payload-4242"


@pytest.fixture
def logs(capfd: pytest.CaptureFixture[str]) -> Iterator[Callable[[], list[dict[str, Any]]]]:
    """A reader of the JSON log lines written since its last call. Logging is configured at
    the first call, inside the test, so it writes to the test's own stderr."""
    configured = False

    def read() -> list[dict[str, Any]]:
        nonlocal configured
        if not configured:
            configure_logging("WARNING")
            configured = True
        return [json.loads(line) for line in capfd.readouterr().err.splitlines() if line]

    yield read
    logging.getLogger().setLevel(logging.WARNING)


@pytest.fixture
def failing_app(app: FastAPI) -> FastAPI:
    """The real app with two extra routes that fail: one in Python, one in Postgres."""

    def python_bug() -> None:
        raise RuntimeError("a bug")

    def failed_statement(ctx: ContextDep) -> None:
        with ctx.db.transaction() as session:
            session.execute(text("SELECT CAST(:value AS integer)"), {"value": SECRET})

    app.add_api_route("/test/python-bug", python_bug)
    app.add_api_route("/test/failed-statement", failed_statement)
    return app


def test_an_unexpected_error_is_one_500_and_one_log_line_with_its_traceback(
    failing_app: FastAPI, logs: Callable[[], list[dict[str, Any]]]
) -> None:
    # TestClient raises what escapes the app: the error must end in the app, as it must not
    # reach the server either (uvicorn would log it a second time).
    with TestClient(failing_app) as client:
        logs()
        response = client.get("/test/python-bug", headers={"X-Request-ID": "req-500"})
    assert response.status_code == 500
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == "internal-error"
    errors = [line for line in logs() if line["level"] == "ERROR"]
    assert len(errors) == 1, errors
    assert errors[0]["message"] == "unhandled error"
    assert errors[0]["request_id"] == "req-500"
    assert "RuntimeError: a bug" in errors[0]["exc_info"]
    assert "python_bug" in errors[0]["exc_info"]


def test_a_failed_statement_is_logged_without_its_values(
    failing_app: FastAPI, logs: Callable[[], list[dict[str, Any]]]
) -> None:
    with TestClient(failing_app) as client:
        logs()
        response = client.get("/test/failed-statement")
    assert response.status_code == 500
    lines = logs()
    errors = [line for line in lines if line["level"] == "ERROR"]
    assert len(errors) == 1, errors
    assert "SQLSTATE 22P02" in errors[0]["error"]
    assert "CAST(%(value)s AS integer)" in errors[0]["statement"]
    assert "failed_statement" in errors[0]["traceback"]
    assert SECRET not in json.dumps(lines)


@pytest.fixture
def impatient(settings: Settings, ctx: Context) -> Iterator[TestClient]:
    with TestClient(create_app(settings.model_copy(update={"api_statement_timeout_ms": 200}))) as c:
        yield c


def test_a_statement_past_the_timeout_is_a_503_with_retry_after(
    impatient: TestClient, ctx: Context, producer: dict[str, str]
) -> None:
    job = impatient.post("/jobs", json={"task": "noop"}, headers=producer).json()
    # Another session holds the job's row: the API's cancel waits on the lock until Postgres
    # cancels the statement.
    with ctx.db.engine.connect() as other, other.begin():
        other.execute(text("SELECT id FROM jobs WHERE id = :id FOR UPDATE"), {"id": job["id"]})
        response = impatient.post(f"/jobs/{job['id']}/cancel", headers=producer)
    assert response.status_code == 503, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == "statement-timeout"
    assert int(response.headers["Retry-After"]) >= 1
    # The lock gone, the same call goes through.
    assert impatient.post(f"/jobs/{job['id']}/cancel", headers=producer).status_code == 200


def test_only_the_api_sessions_carry_the_timeout(impatient: TestClient, ctx: Context) -> None:
    api: Context = impatient.app.state.context  # type: ignore[attr-defined]
    with api.db.transaction() as session:
        assert session.execute(text("SHOW statement_timeout")).scalar() == "200ms"
    # The fleet and the duties build their context without one.
    with ctx.db.transaction() as session:
        assert session.execute(text("SHOW statement_timeout")).scalar() == "0"


def test_a_problem_echoing_what_orjson_refuses_is_still_sent() -> None:
    errors = [{"loc": ["body", "\ud800"], "msg": "Extra inputs are not permitted", "n": 2**70}]
    response = problem_response(422, "validation-error", "Invalid request", "x", errors=errors)
    assert response.status_code == 422
    assert json.loads(response.body)["errors"][0]["loc"] == ["body", "\ud800"]
