"""Request ids in and out, JSON log lines that carry them, and the metrics: what they count,
who may read them, and the directory every process counts into."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.logging import configure_logging
from app.metrics import MULTIPROC_ENV, prepare_multiprocess_dir


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
    client: TestClient, producer: dict[str, str], make_key: Any
) -> None:
    reader = {"Authorization": f"Bearer {make_key('ops', 'metrics')}"}
    job = client.post("/jobs", json={"task": "echo", "queue": "mail"}, headers=producer).json()
    client.get(f"/jobs/{job['id']}", headers=producer)
    client.request("BREW", "/jobs", headers=producer)  # a method the client invented
    text = client.get("/metrics", headers=reader).text
    assert 'jobfleet_jobs_created_total{queue="mail",task="echo"}' in text
    assert 'jobfleet_http_requests_total{method="GET",route="/jobs/{job_id}",status="200"}' in text
    assert 'jobfleet_queue_depth{queue="mail",state="queued"} 1.0' in text
    assert "jobfleet_queue_oldest_age_seconds" in text
    assert 'method="BREW"' not in text and 'method="other"' in text


def test_metrics_need_a_metrics_or_admin_key_by_default(client: TestClient, make_key: Any) -> None:
    def bearer(*scopes: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {make_key('acme', *scopes)}"}

    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", headers=bearer("producer", "worker")).status_code == 403
    assert client.get("/metrics", headers=bearer("admin")).status_code == 200
    reader = bearer("metrics")
    reply = client.get("/metrics", headers=reader)
    assert reply.status_code == 200 and "jobfleet_http_requests_total" in reply.text

    # A metrics key reads /metrics and nothing else.
    refused = [
        ("GET", "/jobs", None), ("GET", "/queues", None), ("GET", "/workers", None),
        ("GET", "/dlq", None), ("POST", "/jobs", {"task": "noop"}),
        ("POST", "/queues/default/lease", {}), ("PUT", "/fleet/h1/size", {"processes": 1}),
    ]  # fmt: skip
    for method, path, body in refused:
        answer = client.request(method, path, json=body, headers=reader)
        assert answer.status_code == 403, (method, path, answer.text)
        assert answer.headers["content-type"] == "application/problem+json"


def test_metrics_public_serves_them_without_a_key(settings: Any) -> None:
    from app.main import create_app

    public = settings.model_copy(update={"metrics_public": True})
    with TestClient(create_app(public)) as client:
        assert client.get("/metrics").status_code == 200


def test_each_run_counts_into_an_empty_metrics_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The function sets the variable; recording it first makes the teardown put it back as it
    # was (delenv alone records nothing when the variable is absent).
    monkeypatch.setenv(MULTIPROC_ENV, "")
    monkeypatch.delenv(MULTIPROC_ENV)
    earlier = tmp_path / "worker"
    earlier.mkdir()
    (earlier / "counter_4242.db").write_bytes(b"a dead run's counts")
    path = prepare_multiprocess_dir(str(tmp_path), "worker")
    assert path == str(earlier) == os.environ[MULTIPROC_ENV]
    assert list(earlier.iterdir()) == []

    fresh = Path(prepare_multiprocess_dir("", "api"))
    assert fresh.name == "api" and fresh.is_dir() and list(fresh.iterdir()) == []
    fresh.rmdir()
    fresh.parent.rmdir()
