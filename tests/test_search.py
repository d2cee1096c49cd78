"""Searching jobs: every filter, containment in payloads, substrings of errors, keyset pages
(under and over the exact count), and the tenant walls around all of them, through the
service and through GET /jobs."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text
from sqlalchemy.orm import Session

from app.domain.errors import Forbidden
from app.domain.filters import TOTAL_CAP, JobQuery, error_digest
from app.domain.principal import Principal, Scope
from app.domain.states import JobStatus
from app.services import dlq, search
from app.services.context import Context
from app.store.search import conditions, like_pattern

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
ACME = Principal(uuid.uuid4(), "acme", frozenset({Scope.PRODUCER}))
GLOBEX = Principal(uuid.uuid4(), "globex", frozenset({Scope.PRODUCER}))
ADMIN = Principal(uuid.uuid4(), "ops", frozenset({Scope.ADMIN}))


def add_job(
    session: Session,
    tenant: str = "acme",
    *,
    minute: int = 0,
    queue: str = "default",
    task: str = "noop",
    status: str = "completed",
    payload: Any = None,
    error: str | None = None,
    key: str | None = None,
) -> uuid.UUID:
    """A job created `minute` minutes after T0, as the API and a worker would have left it."""
    job_id: uuid.UUID = session.scalar(
        text(
            "INSERT INTO jobs (tenant, queue, task, payload, status, idempotency_key, "
            "max_retries, timeout_seconds, last_error, created_at) VALUES (:tenant, :queue, "
            ":task, CAST(:payload AS jsonb), :status, :key, 3, 300, :error, :created_at) "
            "RETURNING id"
        ),
        {
            "tenant": tenant,
            "queue": queue,
            "task": task,
            "payload": orjson.dumps(payload if payload is not None else {}).decode(),
            "status": status,
            "key": key,
            "error": error,
            "created_at": T0 + timedelta(minutes=minute),
        },
    )
    return job_id


@pytest.fixture
def history(ctx: Context) -> dict[str, uuid.UUID]:
    """Two tenants' jobs, each kind a search can tell apart. B's jobs hold values A's never do."""
    with ctx.db.transaction() as session:
        return {
            "a_order": add_job(session, minute=1, payload={"order": 1001, "tags": ["x", "y"]}),
            "a_mail": add_job(session, minute=2, queue="mail", task="send_email"),
            "a_failed": add_job(
                session, minute=3, status="failed", error="ConnectionRefusedError: SMTP refused"
            ),
            "a_keyed": add_job(session, minute=4, key="order-1001", payload={"order": 1002}),
            "a_odd_error": add_job(session, minute=5, status="failed", error="50%_done\\ok"),
            "b_order": add_job(session, "globex", minute=6, payload={"order": 777, "vip": True}),
            "b_failed": add_job(
                session, "globex", minute=7, status="failed", error="Secret Globex outage"
            ),
            "b_keyed": add_job(session, "globex", minute=8, key="order-1001"),
        }


def found(ctx: Context, principal: Principal, **terms: Any) -> list[uuid.UUID]:
    page = search.search(ctx, principal, JobQuery(tenant=terms.pop("tenant", None), **terms), 50)
    return [job.id for job in page.items]


def test_each_filter_narrows_to_its_jobs(ctx: Context, history: dict[str, uuid.UUID]) -> None:
    h = history
    assert found(ctx, ACME) == [h["a_odd_error"], h["a_keyed"], h["a_failed"], h["a_mail"],
                                h["a_order"]]  # fmt: skip
    assert found(ctx, ACME, status=JobStatus.FAILED) == [h["a_odd_error"], h["a_failed"]]
    assert found(ctx, ACME, queue="mail") == [h["a_mail"]]
    assert found(ctx, ACME, task="send_email") == [h["a_mail"]]
    window = {
        "created_after": T0 + timedelta(minutes=2),
        "created_before": T0 + timedelta(minutes=4),
    }
    assert found(ctx, ACME, **window) == [h["a_failed"], h["a_mail"]]  # after inclusive, before not
    assert found(ctx, ACME, job_id=h["a_mail"]) == [h["a_mail"]]
    assert found(ctx, ACME, idempotency_key="order-1001") == [h["a_keyed"]]
    assert found(ctx, ACME, status=JobStatus.FAILED, queue="mail") == []


def test_payload_containment_matches_objects_arrays_and_nested_values(
    ctx: Context, history: dict[str, uuid.UUID]
) -> None:
    h = history
    assert found(ctx, ACME, payload_contains={"order": 1001}) == [h["a_order"]]
    assert found(ctx, ACME, payload_contains={"tags": ["y"]}) == [h["a_order"]]
    assert found(ctx, ACME, payload_contains={"order": "1001"}) == []  # JSON types count
    with ctx.db.transaction() as session:
        listed = add_job(session, minute=9, payload=[{"sku": "A-1"}, {"sku": "B-2"}])
    assert found(ctx, ACME, payload_contains=[{"sku": "B-2"}]) == [listed]


def test_error_search_is_a_case_insensitive_substring_with_literal_wildcards(
    ctx: Context, history: dict[str, uuid.UUID]
) -> None:
    h = history
    assert found(ctx, ACME, error_contains="smtp REFUSED") == [h["a_failed"]]
    assert found(ctx, ACME, error_contains="50%_done\\") == [h["a_odd_error"]]
    assert found(ctx, ACME, error_contains="50%%done") == []  # % is a character, not "anything"
    assert found(ctx, ACME, error_contains="5_%") == []  # _ too
    assert like_pattern("a%b_c\\") == "%a\\%b\\_c\\\\%"


def test_a_producer_never_finds_another_tenants_jobs(
    ctx: Context, history: dict[str, uuid.UUID]
) -> None:
    h = history
    searches: list[dict[str, Any]] = [
        {},
        {"payload_contains": {"order": 777}},  # a value only B's jobs hold
        {"payload_contains": {"vip": True}},
        {"error_contains": "globex outage"},
        {"job_id": h["b_order"]},
        {"idempotency_key": "order-1001"},
        {"status": JobStatus.FAILED},
        {"created_after": T0 + timedelta(minutes=6)},
    ]
    b_jobs = {h["b_order"], h["b_failed"], h["b_keyed"]}
    for terms in searches:
        assert not set(found(ctx, ACME, **terms)) & b_jobs, terms
        assert not set(found(ctx, ACME, tenant="acme", **terms)) & b_jobs, terms
    assert found(ctx, ACME, payload_contains={"order": 777}) == []
    assert found(ctx, GLOBEX, payload_contains={"order": 777}) == [h["b_order"]]
    with pytest.raises(Forbidden):
        found(ctx, ACME, tenant="globex")
    # An admin sees every tenant, or the one it names.
    assert found(ctx, ADMIN, idempotency_key="order-1001") == [h["b_keyed"], h["a_keyed"]]
    assert found(ctx, ADMIN, tenant="globex", idempotency_key="order-1001") == [h["b_keyed"]]
    assert found(ctx, ADMIN, tenant="globex", error_contains="outage") == [h["b_failed"]]


def test_admin_searches_across_tenants(ctx: Context, history: dict[str, uuid.UUID]) -> None:
    page = search.search(ctx, ADMIN, JobQuery(None, status=JobStatus.FAILED), 50)
    assert {job.tenant for job in page.items} == {"acme", "globex"}
    assert page.total == 3 and page.total_exact


def walk(
    ctx: Context, principal: Principal, query: JobQuery, limit: int
) -> tuple[list[uuid.UUID], list[Any]]:
    """Every page of a search through its cursor: the ids in order, and the pages."""
    pages = [search.search(ctx, principal, query, limit)]
    while pages[-1].next_cursor:
        pages.append(search.search(ctx, principal, query, limit, pages[-1].next_cursor))
    return [job.id for page in pages for job in page.items], pages


@pytest.mark.parametrize("shared_minutes", [False, True])
def test_keyset_pages_return_each_match_once_newest_first(
    ctx: Context, shared_minutes: bool
) -> None:
    """Ties on created_at (several jobs of one instant) are ordered by id, so no page repeats
    or skips one; other tenants' and other queues' jobs in between change nothing."""
    with ctx.db.transaction() as session:
        mine = [add_job(session, minute=n // 3 if shared_minutes else n) for n in range(23)]
        for n in range(10):
            add_job(session, "globex", minute=n)
            add_job(session, minute=n, queue="elsewhere")
    expected = sorted(mine, key=lambda i: (T0 + timedelta(minutes=mine.index(i)), i))
    query = JobQuery(tenant=None, queue="default")
    ids, pages = walk(ctx, ACME, query, limit=5)
    assert [len(page.items) for page in pages] == [5, 5, 5, 5, 3]
    assert len(set(ids)) == 23 and set(ids) == set(mine)
    if not shared_minutes:
        assert ids == expected[::-1]
    created = [(job.created_at, job.id) for page in pages for job in page.items]
    assert created == sorted(created, reverse=True)
    assert all(page.total == 23 and page.total_exact for page in pages)


def test_beyond_the_count_cap_total_is_a_floor_and_pages_still_walk(ctx: Context) -> None:
    """More matches than TOTAL_CAP: the page comes from an ordered index walk, the total says
    "at least", and the cursor and offset continue exactly as below the cap."""
    with ctx.db.transaction() as session:
        session.execute(
            text(
                "INSERT INTO jobs (tenant, queue, task, status, max_retries, timeout_seconds, "
                "payload, created_at) SELECT 'acme', 'bulk', 'noop', 'completed', 3, 300, "
                "jsonb_build_object('n', n), :t0 + make_interval(secs => n) "
                "FROM generate_series(1, :count) AS n"
            ),
            {"t0": T0, "count": TOTAL_CAP + 50},
        )
        session.execute(text("ANALYZE jobs"))
    query = JobQuery(tenant=None, queue="bulk")
    first = search.search(ctx, ACME, query, 100)
    assert first.total == TOTAL_CAP and not first.total_exact
    assert [job.payload["n"] for job in first.items] == list(
        range(TOTAL_CAP + 50, TOTAL_CAP - 50, -1)
    )
    second = search.search(ctx, ACME, query, 100, first.next_cursor)
    assert [job.payload["n"] for job in second.items] == list(
        range(TOTAL_CAP - 50, TOTAL_CAP - 150, -1)
    )
    by_offset = search.search(ctx, ACME, query, 100, offset=100)
    assert [job.id for job in by_offset.items] == [job.id for job in second.items]
    # A narrower search of the same jobs falls under the cap again, and is counted exactly.
    few = search.search(ctx, ACME, JobQuery(None, queue="bulk", payload_contains={"n": 7}), 10)
    assert few.total == 1 and few.total_exact and few.items[0].payload == {"n": 7}


def test_searches_in_payloads_and_errors_can_use_their_indexes(ctx: Context) -> None:
    """The conditions as the store writes them fit the indexes of migration 0004 (the trigram
    index is partial, and takes no ESCAPE clause): with sequential scans off, the planner
    reaches each through its index."""
    terms = {
        "ix_jobs_last_error_trgm": JobQuery(None, error_contains="refused"),
        "ix_jobs_queue_created": JobQuery(None, queue="mail"),
        "ix_jobs_task_created": JobQuery(None, task="send_email"),
    }
    with ctx.db.transaction() as session:
        dialect = session.get_bind().dialect
        written = {
            index: str(cond.compile(dialect=dialect, compile_kwargs={"literal_binds": True}))
            for index, query in terms.items()
            for cond in conditions(query)
        }
        # JSONB has no literal form in SQLAlchemy: the operator it writes, with a literal.
        (containment,) = conditions(JobQuery(None, payload_contains={"order": 1}))
        assert " @> " in str(containment.compile(dialect=dialect))
        written["ix_jobs_payload"] = "jobs.payload @> '{\"order\": 1}'"
        session.execute(text("SET LOCAL enable_seqscan = off"))
        for index, condition in written.items():
            plan = session.execute(text(f"EXPLAIN SELECT id FROM jobs WHERE {condition}")).all()
            assert index in "\n".join(row[0] for row in plan), (index, condition, plan)


def test_a_query_survives_its_json_form() -> None:
    """How a query is stored (a bulk operation's filter, say) and read back."""
    query = JobQuery(
        tenant="acme",
        status=JobStatus.FAILED,
        queue="mail",
        created_after=T0,
        job_id=uuid.uuid4(),
        payload_contains={"order": 1001, "tags": ["x"]},
        error_contains="refused",
        id_or_key="order-1001",
        error_digest=error_digest("refused"),
    )
    stored = orjson.loads(orjson.dumps(query.to_json()))
    assert "task" not in stored and stored["status"] == "failed"
    assert JobQuery.from_json(stored) == query
    assert JobQuery.from_json({}) == JobQuery(None)


def test_one_search_box_finds_a_job_by_id_or_by_idempotency_key(
    ctx: Context, history: dict[str, uuid.UUID]
) -> None:
    """`id_or_key`: the dashboard's box. Keys are often UUIDs, so a UUID is tried as both."""
    h = history
    assert found(ctx, ACME, id_or_key=str(h["a_mail"])) == [h["a_mail"]]
    assert found(ctx, ACME, id_or_key="order-1001") == [h["a_keyed"]]
    assert found(ctx, ACME, id_or_key=str(h["b_order"])) == []  # another tenant's id
    with ctx.db.transaction() as session:
        uuid_key = str(uuid.uuid4())
        keyed = add_job(session, minute=10, key=uuid_key)
        add_job(session, "globex", minute=11, key=uuid_key)
    assert found(ctx, ACME, id_or_key=uuid_key) == [keyed]
    assert found(ctx, ACME, id_or_key="no-such-key") == []


def test_dead_letters_group_by_task_and_exact_error_largest_first(ctx: Context) -> None:
    multi_line = "Traceback:\n  line 1\nValueError: bad"
    with ctx.db.transaction() as session:
        for n in range(3):
            add_job(session, minute=n, task="mail", status="failed", error="SMTP refused")
        add_job(session, minute=3, task="mail", status="failed", error="SMTP refused!")
        add_job(session, minute=4, task="bill", status="failed", error="SMTP refused")
        for n in range(2):
            add_job(session, minute=5 + n, task="bill", status="failed", error=multi_line)
        add_job(session, minute=7, task="mail", status="completed", error="SMTP refused")
        add_job(session, "globex", minute=8, task="mail", status="failed", error="SMTP refused")
    groups = dlq.groups(ctx, ACME, JobQuery(None), 10)
    assert [(g.task, g.error, g.jobs) for g in groups] == sorted(
        [("mail", "SMTP refused", 3), ("bill", multi_line, 2), ("mail", "SMTP refused!", 1),
         ("bill", "SMTP refused", 1)],
        key=lambda group: (-group[2], group[0], error_digest(group[1])),
    )  # fmt: skip
    assert all(g.digest == error_digest(g.error) for g in groups)
    # A group's task and digest find its jobs again, and only them.
    multi = next(g for g in groups if g.task == "bill" and g.jobs == 2)
    again = found(ctx, ACME, status=JobStatus.FAILED, task="bill", error_digest=multi.digest)
    assert len(again) == 2
    # Filters narrow the groups; an admin's cover every tenant.
    narrowed = dlq.groups(ctx, ACME, JobQuery(None, error_contains="!"), 10)
    assert [(g.task, g.jobs) for g in narrowed] == [("mail", 1)]
    everyone = dlq.groups(ctx, ADMIN, JobQuery(None, task="mail", error_contains="refused"), 10)
    assert [(g.error, g.jobs) for g in everyone] == [("SMTP refused", 4), ("SMTP refused!", 1)]
    assert dlq.groups(ctx, ACME, JobQuery(None), 1) == groups[:1]
    with pytest.raises(Forbidden):
        dlq.groups(ctx, ACME, JobQuery("globex"), 10)


# -- through GET /jobs ------------------------------------------------------------------


def test_get_jobs_takes_every_search_parameter(
    client: TestClient,
    make_key: Callable[..., str],
    history: dict[str, uuid.UUID],
) -> None:
    h = history
    acme = {"Authorization": f"Bearer {make_key('acme')}"}
    admin = {"Authorization": f"Bearer {make_key('ops', 'admin')}"}

    def ids(headers: dict[str, str], **params: Any) -> list[str]:
        response = client.get("/jobs", params=params, headers=headers)
        assert response.status_code == 200, response.text
        return [job["id"] for job in response.json()["items"]]

    assert ids(acme, payload='{"order": 1001}') == [str(h["a_order"])]
    assert ids(acme, payload='{"order": 777}') == []
    assert ids(acme, error="REFUSED") == [str(h["a_failed"])]
    assert ids(acme, error="globex") == []
    assert ids(acme, id=str(h["a_mail"])) == [str(h["a_mail"])]
    assert ids(acme, id=str(h["b_order"])) == []
    assert ids(acme, idempotency_key="order-1001") == [str(h["a_keyed"])]
    assert ids(acme, tenant="acme", queue="mail") == [str(h["a_mail"])]
    window = {"created_after": "2026-03-01T13:02:00+01:00", "created_before": "2026-03-01T12:04Z"}
    assert ids(acme, **window) == [str(h["a_failed"]), str(h["a_mail"])]
    assert ids(admin, tenant="globex", error="outage") == [str(h["b_failed"])]
    page = client.get("/jobs", params={"tenant": "globex"}, headers=admin).json()
    assert page["total"] == 3 and page["total_exact"] is True

    refused = client.get("/jobs", params={"tenant": "globex"}, headers=acme)
    assert refused.status_code == 403 and refused.json()["code"] == "forbidden"


@pytest.mark.parametrize(
    ("params", "field", "kind"),
    [
        ({"payload": "{not json"}, "payload", "json_invalid"),
        ({"payload": "1001"}, "payload", "json_container"),
        ({"payload": '"order"'}, "payload", "json_container"),
        ({"payload": "{}"}, "payload", "json_empty"),
        ({"payload": '{"a": "\\u0000"}'}, "payload", "string_nul"),
        ({"payload": '{"a": 1e400}'}, "payload", "float_not_finite"),
        ({"payload": '{"a": 99999999999999999999}'}, "payload", "int_out_of_range"),
        ({"payload": "[" * 70 + "]" * 70}, "payload", "json_too_deep"),
        ({"payload": "[" * 999 + "]" * 999}, "payload", "json_too_deep"),
        ({"payload": '{"a": NaN}'}, "payload", "float_not_finite"),
        ({"payload": '{"a": "' + "x" * 2000 + '"}'}, "payload", "too_long"),
        ({"error": "ab"}, "error", "too_short"),
        ({"error": "x" * 201}, "error", "too_long"),
        ({"error": "abc\x00"}, "error", "string_nul"),
        ({"tenant": "a\x00"}, "tenant", "string_nul"),
        ({"tenant": "t" * 129}, "tenant", "too_long"),
        ({"idempotency_key": "k\x00"}, "idempotency_key", "string_nul"),
        ({"created_after": "2026-03-01T12:00:00"}, "created_after", "timezone_aware"),
        ({"created_before": "yesterday"}, "created_before", "datetime_from_date_parsing"),
        ({"created_after": "0001-01-01T00:00:00+01:00"}, "created_after", "datetime_out_of_range"),
        ({"id": "not-a-uuid"}, "id", "uuid_parsing"),
    ],
)
def test_get_jobs_refuses_bad_search_terms_with_422(
    client: TestClient, producer: dict[str, str], params: dict[str, str], field: str, kind: str
) -> None:
    response = client.get("/jobs", params=params, headers=producer)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["code"] == "validation-error"
    assert [(e["loc"], e["type"]) for e in problem["errors"]] == [(["query", field], kind)]
