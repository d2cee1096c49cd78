"""Hostile input gets 422 problem JSON naming the field, never a 5xx: values Postgres or the
JSON encoder refuse (NUL, lone surrogates, integers past 64 bits, NaN, deep nesting, odd UTC
offsets, far years), unbounded numbers, garbage cursors and bodies that are not JSON."""

from __future__ import annotations

import base64
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient
from httpx import Response

from app.domain.schemas import MAX_OFFSET
from app.domain.values import MAX_JSON_DEPTH

JSON = {"Content-Type": "application/json"}


def key_headers(make_key: Callable[..., str], *scopes: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {make_key('acme', *scopes)}"}


def refused(response: Response, loc: list[Any], kind: str | None = None) -> dict[str, Any]:
    """Assert a 422 problem whose errors name `loc` (and `kind`, when given)."""
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["code"] == "validation-error"
    matching = [e for e in problem["errors"] if e["loc"] == loc]
    assert matching, problem
    if kind is not None:
        assert matching[0]["type"] == kind, problem
    return problem


def post_raw(client: TestClient, path: str, body: str | bytes, headers: dict[str, str]) -> Response:
    return client.post(path, content=body, headers={**headers, **JSON})


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


# -- payloads: what Postgres jsonb or our JSON encoder refuse --------------------------------


@pytest.mark.parametrize(
    ("payload", "kind"),
    [
        ('{"n": 18446744073709551616}', "int_out_of_range"),  # 2**64: orjson cannot encode it
        ('{"n": 9223372036854775808}', "int_out_of_range"),  # 2**63: past signed 64 bits
        ('{"n": -9223372036854775809}', "int_out_of_range"),
        # jsonb keeps these as exact numbers that come back as integers past 64 bits.
        ('{"n": 1e19}', "int_out_of_range"),
        ('{"n": [-1.5e300]}', "int_out_of_range"),
        ('{"n": "\\ud800"}', "string_surrogate"),  # a lone surrogate
        ('{"\\udfff": 1}', "string_surrogate"),  # in a key
        ('{"n": "a\\u0000b"}', "string_nul"),
        ('{"a\\u0000": 1}', "string_nul"),
        ('{"n": NaN}', "float_not_finite"),  # Python's json accepts these; jsonb does not
        ('{"n": Infinity}', "float_not_finite"),
        ('{"n": -Infinity}', "float_not_finite"),
        ('{"n": 1e400}', "float_not_finite"),  # parses as inf
        (nested(300), "json_too_deep"),
        (nested(MAX_JSON_DEPTH + 1), "json_too_deep"),
    ],
)
def test_unstorable_payloads_are_refused(
    client: TestClient, admin: dict[str, str], payload: str, kind: str
) -> None:
    body = f'{{"task": "noop", "payload": {payload}}}'
    refused(post_raw(client, "/jobs", body, admin), ["body", "payload"], kind)


def test_payload_limits_are_inclusive(client: TestClient, admin: dict[str, str]) -> None:
    payload = f'{{"deep": {nested(MAX_JSON_DEPTH - 1)}, "max": {2**63 - 1}, "min": {-(2**63)}}}'
    response = post_raw(client, "/jobs", f'{{"task": "noop", "payload": {payload}}}', admin)
    assert response.status_code == 201, response.text
    job = client.get(f"/jobs/{response.json()['id']}", headers=admin).json()
    assert job["payload"]["max"] == 2**63 - 1 and job["payload"]["min"] == -(2**63)


def test_refusal_says_where_inside_the_payload(client: TestClient, admin: dict[str, str]) -> None:
    body = '{"task": "noop", "payload": {"items": [1, {"n": 18446744073709551616}]}}'
    problem = refused(post_raw(client, "/jobs", body, admin), ["body", "payload"])
    assert "at .items[1].n" in problem["errors"][0]["msg"]


def test_a_batch_refuses_the_one_unstorable_job(client: TestClient, admin: dict[str, str]) -> None:
    body = '{"jobs": [{"task": "noop"}, {"task": "noop", "payload": [18446744073709551616]}]}'
    response = post_raw(client, "/jobs/batch", body, admin)
    assert response.status_code == 200, response.text
    first, second = response.json()["results"]
    assert first["status"] == 201
    assert second["status"] == 422
    assert second["problem"]["errors"][0]["loc"] == ["body", "jobs", 1, "payload"]


# -- bodies that are not JSON: always 422 with loc ["body"] ----------------------------------


@pytest.mark.parametrize(
    "body",
    [
        b'{"task": "noop"',  # cut short
        b'{"task": "noop", "payload": ' + b"[" * (1_048_576 - 64),  # 1 MiB of nesting
        nested(100_000).encode(),  # deeper than the parser recurses
        b'{"task": "\xff\xfe"}',  # not UTF-8
    ],
    ids=["truncated", "one-mebibyte-of-brackets", "deep-closed", "not-utf8"],
)
def test_a_body_that_is_not_json_is_a_422(
    client: TestClient, admin: dict[str, str], body: bytes
) -> None:
    response = post_raw(client, "/jobs", body, admin)
    refused(response, ["body"], "json_invalid")


def test_a_body_of_another_content_type_is_a_422(client: TestClient, admin: dict[str, str]) -> None:
    response = client.post(
        "/jobs", content=b'{"task": "noop"}', headers={**admin, "Content-Type": "text/plain"}
    )
    refused(response, ["body"])


# -- text that reaches Postgres -----------------------------------------------------------


@pytest.mark.parametrize("path", ["/jobs", "/dlq"])
@pytest.mark.parametrize("name", ["queue", "task"])
def test_nul_in_a_listing_filter_is_a_422(
    client: TestClient, admin: dict[str, str], path: str, name: str
) -> None:
    refused(client.get(f"{path}?{name}=%00", headers=admin), ["query", name])


@pytest.mark.parametrize("key", ["a\\u0000b", "\\ud800"])
def test_an_idempotency_key_postgres_cannot_hold_is_a_422(
    client: TestClient, admin: dict[str, str], key: str
) -> None:
    body = f'{{"task": "noop", "idempotency_key": "{key}"}}'
    refused(post_raw(client, "/jobs", body, admin), ["body", "idempotency_key"])


# -- numbers ------------------------------------------------------------------------------


@pytest.mark.parametrize("offset", ["100000000000000000000", str(MAX_OFFSET + 1), "-1"])
def test_offsets_are_bounded(client: TestClient, admin: dict[str, str], offset: str) -> None:
    refused(client.get(f"/jobs?offset={offset}", headers=admin), ["query", "offset"])
    refused(client.get(f"/dlq?offset={offset}", headers=admin), ["query", "offset"])


def test_the_largest_offset_answers(client: TestClient, admin: dict[str, str]) -> None:
    response = client.get(f"/jobs?offset={MAX_OFFSET}", headers=admin)
    assert response.status_code == 200
    assert response.json()["items"] == []


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("timeout_seconds", "2147483648"),
        ("timeout_seconds", "99999999999999999999999"),
        ("max_retries", "18446744073709551616"),
        ("priority", "18446744073709551616"),
        ("delay_seconds", "1e400"),
        ("delay_seconds", "NaN"),
    ],
)
def test_job_numbers_are_bounded(
    client: TestClient, admin: dict[str, str], field: str, value: str
) -> None:
    body = f'{{"task": "noop", "{field}": {value}}}'
    refused(post_raw(client, "/jobs", body, admin), ["body", field])


# -- time zones and years ------------------------------------------------------------------


def test_run_at_with_an_offset_beyond_postgres_range_is_stored_in_utc(
    client: TestClient, admin: dict[str, str]
) -> None:
    response = client.post(
        "/jobs", json={"task": "noop", "run_at": "2030-01-01T00:00:00+16:00"}, headers=admin
    )
    assert response.status_code == 201, response.text
    assert response.json()["run_at"] in ("2029-12-31T08:00:00Z", "2029-12-31T08:00:00+00:00")


@pytest.mark.parametrize(
    "run_at",
    [
        "9999-12-31T23:00:00-05:00",  # year 10000 in UTC
        "0001-01-01T00:00:00+01:00",  # year 0 in UTC
        "10000-01-01T00:00:00Z",
        "0000-01-01T00:00:00Z",
        "2030-01-01T00:00:00",  # no offset: which time is meant?
    ],
)
def test_run_at_outside_storable_years_or_without_offset_is_a_422(
    client: TestClient, admin: dict[str, str], run_at: str
) -> None:
    response = client.post("/jobs", json={"task": "noop", "run_at": run_at}, headers=admin)
    refused(response, ["body", "run_at"])


# -- cursors -------------------------------------------------------------------------------


UNKNOWN_ID = "6f1c2a4e-3b5d-4e7f-8a9b-0c1d2e3f4a5b"


def cursor_of(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


@pytest.mark.parametrize(
    "cursor",
    [
        "abc",
        "%00",
        "!!!!",
        "A" * 201,
        cursor_of("not-a-time|not-a-uuid"),
        # Fixed ids: the test ids (which embed the cursors) must be the same in every process
        # that collects them (pytest-xdist's workers).
        cursor_of(f"2030-01-01T00:00:00|{UNKNOWN_ID}"),  # no offset
        cursor_of(f"0001-01-01T00:00:00+01:00|{UNKNOWN_ID}"),  # before year 1 in UTC
        base64.urlsafe_b64encode(b"\xff\xfe|x").decode().rstrip("="),  # not UTF-8
    ],
)
def test_garbage_cursors_are_a_422(client: TestClient, admin: dict[str, str], cursor: str) -> None:
    refused(client.get(f"/jobs?cursor={cursor}", headers=admin), ["query", "cursor"])
    refused(client.get(f"/dlq?cursor={cursor}", headers=admin), ["query", "cursor"])


def test_a_cursor_with_a_far_offset_still_pages(client: TestClient, admin: dict[str, str]) -> None:
    for _ in range(2):
        assert client.post("/jobs", json={"task": "noop"}, headers=admin).status_code == 201
    cursor = cursor_of(f"2999-01-01T00:00:00+20:00|{uuid.uuid4()}")
    response = client.get(f"/jobs?cursor={cursor}", headers=admin)
    assert response.status_code == 200, response.text
    assert len(response.json()["items"]) == 2


# -- the HTTP lease protocol ----------------------------------------------------------------


@pytest.fixture
def worker(make_key: Callable[..., str]) -> dict[str, str]:
    return key_headers(make_key, "worker")


@pytest.mark.parametrize("error", ["boom\\u0000", "\\udc00"])
def test_a_nack_error_postgres_cannot_hold_is_a_422(
    client: TestClient, worker: dict[str, str], error: str
) -> None:
    body = f'{{"lease_token": "{uuid.uuid4()}", "error": "{error}"}}'
    refused(post_raw(client, f"/jobs/{uuid.uuid4()}/nack", body, worker), ["body", "error"])


@pytest.mark.parametrize(
    ("result", "kind"),
    [("18446744073709551616", "int_out_of_range"), (nested(200), "json_too_deep")],
)
def test_an_unstorable_result_is_a_422(
    client: TestClient, worker: dict[str, str], result: str, kind: str
) -> None:
    body = f'{{"lease_token": "{uuid.uuid4()}", "result": {result}}}'
    refused(post_raw(client, f"/jobs/{uuid.uuid4()}/ack", body, worker), ["body", "result"], kind)


@pytest.mark.parametrize("field", ["lease_seconds", "wait_seconds"])
@pytest.mark.parametrize("value", ["NaN", "-Infinity", "1e400", "18446744073709551616"])
def test_lease_durations_are_finite_and_bounded(
    client: TestClient, worker: dict[str, str], field: str, value: str
) -> None:
    body = f'{{"worker_id": "w1", "{field}": {value}}}'
    refused(post_raw(client, "/queues/q/lease", body, worker), ["body", field])


def test_a_nack_error_reaches_postgres_intact(
    client: TestClient, make_key: Callable[..., str], worker: dict[str, str]
) -> None:
    producer = key_headers(make_key, "producer")
    job = client.post("/jobs", json={"task": "noop", "queue": "ext"}, headers=producer).json()
    leased = client.post("/queues/ext/lease", json={"worker_id": "w1"}, headers=worker).json()
    assert leased["job"]["id"] == job["id"]
    error = "Trace: caf\u00e9 \u2603 \U0001f600"
    nack = client.post(
        f"/jobs/{job['id']}/nack",
        json={"lease_token": leased["lease_token"], "error": error, "retry": False},
        headers=worker,
    )
    assert nack.status_code == 200, nack.text
    assert client.get(f"/jobs/{job['id']}", headers=producer).json()["last_error"] == error


# -- path parameters -----------------------------------------------------------------------


@pytest.mark.parametrize("host", ["a" * 254, "bad%20host", "bad%00host", "caf%C3%A9"])
def test_fleet_host_names_are_bounded(client: TestClient, admin: dict[str, str], host: str) -> None:
    refused(
        client.put(f"/fleet/{host}/size", json={"processes": 1}, headers=admin), ["path", "host"]
    )
    refused(client.delete(f"/fleet/{host}/size", headers=admin), ["path", "host"])


def test_a_queue_name_with_nul_is_a_422(client: TestClient, admin: dict[str, str]) -> None:
    refused(client.post("/queues/bad%00/pause", headers=admin), ["path", "queue"])
