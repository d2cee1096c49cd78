"""Request ids in and out, and JSON log lines that carry them."""

from __future__ import annotations

import json
import logging
from typing import Any

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


def test_metrics_count_requests_and_jobs_by_route_template(
    client: TestClient, producer: dict[str, str]
) -> None:
    job = client.post("/jobs", json={"task": "echo", "queue": "mail"}, headers=producer).json()
    client.get(f"/jobs/{job['id']}", headers=producer)
    text = client.get("/metrics").text
    assert 'jobfleet_jobs_created_total{queue="mail",task="echo"}' in text
    assert 'jobfleet_http_requests_total{method="GET",route="/jobs/{job_id}",status="200"}' in text
    assert 'jobfleet_queue_depth{queue="mail",state="queued"} 1.0' in text
    assert "jobfleet_queue_oldest_age_seconds" in text


def test_metrics_can_require_an_admin_key(settings: Any, make_key: Any) -> None:
    from app.main import create_app

    private = settings.model_copy(update={"metrics_public": False})
    with TestClient(create_app(private)) as client:
        assert client.get("/metrics").status_code == 401
        producer = {"Authorization": f"Bearer {make_key('acme')}"}
        assert client.get("/metrics", headers=producer).status_code == 403
        admin = {"Authorization": f"Bearer {make_key('ops', 'admin')}"}
        assert client.get("/metrics", headers=admin).status_code == 200
