"""The OpenAPI document describes every reply, and /docs and /redoc work without internet
access: every script, style sheet and icon they load comes from the API itself."""

from __future__ import annotations

import re
from typing import Any

import pytest
from fastapi.testclient import TestClient

PROBLEM = "application/problem+json"


@pytest.fixture
def document(client: TestClient) -> dict[str, Any]:
    response = client.get("/openapi.json")
    assert response.status_code == 200
    return dict(response.json())


def operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method.upper(), path, operation)
        for path, methods in document["paths"].items()
        for method, operation in methods.items()
    ]


def test_every_error_reply_is_problem_json(document: dict[str, Any]) -> None:
    for method, path, operation in operations(document):
        for status, response in operation["responses"].items():
            if int(status) < 400:
                continue
            schema = response["content"][PROBLEM]["schema"]["$ref"]
            expected = "ValidationProblem" if status == "422" else "Problem"
            assert schema.endswith(f"/{expected}"), (method, path, status)
            assert list(response["content"]) == [PROBLEM], (method, path, status)
    problem = document["components"]["schemas"]["Problem"]
    assert set(problem["required"]) == {"type", "title", "status", "detail", "code"}
    assert "HTTPValidationError" not in document["components"]["schemas"]


def test_shared_replies_are_documented_where_they_can_happen(document: dict[str, Any]) -> None:
    for method, path, operation in operations(document):
        codes = set(operation["responses"])
        where = (method, path)
        if operation.get("security"):
            assert {"401", "403", "429"} <= codes, where
            retry_after = operation["responses"]["429"]["headers"]["Retry-After"]
            assert retry_after["required"] is True, where
        if "requestBody" in operation:
            assert {"413", "422"} <= codes, where
        if operation.get("parameters"):
            assert "422" in codes, where
        if path != "/health":
            assert "503" in codes, where
        for response in operation["responses"].values():
            assert "X-Request-ID" in response["headers"], where


def test_route_specific_replies(document: dict[str, Any]) -> None:
    paths = document["paths"]
    assert set(paths["/jobs/{job_id}"]["get"]["responses"]) >= {"200", "404"}
    assert "204" in paths["/jobs/{job_id}"]["delete"]["responses"]
    assert "204" in paths["/queues/{queue}/lease"]["post"]["responses"]
    assert set(paths["/fleet/{host}/size"]["delete"]["responses"]) >= {"204", "404"}
    assert set(paths["/jobs"]["post"]["responses"]) >= {"200", "201", "409"}
    metrics = paths["/metrics"]["get"]
    assert list(metrics["responses"]["200"]["content"]) == ["text/plain"]
    assert {} in metrics["security"]  # a key only when METRICS_PUBLIC is false


def test_rules_the_schema_can_express(document: dict[str, Any]) -> None:
    parameters = {p["name"]: p for p in document["paths"]["/jobs"]["get"]["parameters"]}
    cursor = parameters["cursor"]["schema"]["anyOf"][0]
    assert cursor["pattern"] == "^[A-Za-z0-9_-]+$"
    assert parameters["offset"]["schema"]["maximum"] == 10_000
    job = document["components"]["schemas"]["JobCreate"]
    assert job["properties"]["run_at"]["anyOf"][0]["format"] == "date-time"
    assert "UTC" in job["properties"]["run_at"]["description"]
    assert job["not"]["required"] == ["run_at", "delay_seconds"]
    host = document["paths"]["/fleet/{host}/size"]["put"]["parameters"][0]["schema"]
    assert host["maxLength"] == 253 and "pattern" in host


def referenced(page: str) -> list[str]:
    """Every URL a page loads: src and href attributes, and the spec URL."""
    urls = re.findall(r'(?:src|href|spec-url)="([^"]+)"', page)
    urls += re.findall(r"url: '([^']+)'", page)
    return urls


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_docs_pages_load_everything_from_the_api(client: TestClient, page: str) -> None:
    response = client.get(page)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert "://" not in response.text  # no CDN, no font service, no online validator
    urls = referenced(response.text)
    assert "/openapi.json" in urls
    assert len(urls) >= 3  # the spec, the script, the icon (and Swagger UI's style sheet)
    for url in urls:
        assert url.startswith("/"), url
        asset = client.get(url)
        assert asset.status_code == 200, url
        assert len(asset.content) > 100, url
    if page == "/docs":
        assert any(u.endswith(".css") for u in urls)
        assert "swagger-ui-bundle.js" in response.text
