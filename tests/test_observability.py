"""Request ids in and out, and JSON log lines that carry them."""

from __future__ import annotations

import json
import logging

import pytest
from fastapi.testclient import TestClient

from app.logging import configure_logging


def test_request_id_is_echoed_or_made(client: TestClient, producer: dict[str, str]) -> None:
    given = client.get("/health", headers={"X-Request-ID": "abc-123"})
    assert given.headers["x-request-id"] == "abc-123"
    made = client.get("/health")
    assert len(made.headers["x-request-id"]) == 32
    hostile = client.get("/health", headers={"X-Request-ID": "bad id\twith spaces"})
    assert hostile.headers["x-request-id"] != "bad id\twith spaces"


def test_log_lines_are_json_with_request_tenant_and_job(
    client: TestClient, producer: dict[str, str], capfd: pytest.CaptureFixture[str]
) -> None:
    configure_logging("INFO")
    try:
        response = client.post(
            "/jobs", json={"task": "echo"}, headers={**producer, "X-Request-ID": "req-42"}
        )
        assert response.status_code == 201
        lines = [json.loads(line) for line in capfd.readouterr().err.splitlines() if line]
    finally:
        logging.getLogger().setLevel(logging.WARNING)
    created = [line for line in lines if line.get("action") == "job_created"]
    assert len(created) == 1
    assert created[0]["request_id"] == "req-42"
    assert created[0]["tenant"] == "acme"
    assert created[0]["job_id"] == response.json()["id"]
    access = [line for line in lines if line.get("path") == "/jobs"]
    assert access and access[0]["status"] == 201 and access[0]["request_id"] == "req-42"
