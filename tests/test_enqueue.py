"""Transactional enqueue in one process: app/enqueue.py on a SQLAlchemy connection or session
and on a psycopg2 connection, and the SQL function jobfleet.enqueue(); their validation,
defaults and idempotency against POST /jobs's, the notification Postgres delivers at commit
only, and the listener's push. (Live fleets: tests/test_enqueue_live.py.)"""

from __future__ import annotations

import json
import math
import random
import struct
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg2
import pytest
from sqlalchemy import Connection, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from app.dispatch import delayed, ready
from app.dispatch.ready import Place
from app.domain.schemas import JobCreate, JobDefaults
from app.enqueue import IdempotencyConflict, InvalidRequest, enqueue, enqueue_psycopg2
from app.services import jobs
from app.services.context import Context
from app.services.listening import push
from app.settings import Settings
from app.store import dbapi
from app.store.admin import publish_job_defaults
from app.store.listening import Listening, libpq_url
from tests.fleet_support import PRODUCER, job_row, statuses
from tests.helpers import wait_until

SETTINGS_DEFAULTS = JobDefaults(3, 300, 86_400)


@pytest.fixture
def listening(settings: Settings, ctx: Context) -> Iterator[Listening]:
    """A connection that LISTENs on the enqueued channel, as the listener's does."""
    connection = Listening(settings.database_url)
    yield connection
    connection.close()


@pytest.fixture
def pg(settings: Settings, ctx: Context) -> Iterator[Any]:
    """A plain psycopg2 connection to the test database, as an application would hold one."""
    connection = psycopg2.connect(libpq_url(settings.database_url))
    yield connection
    connection.close()


def heard(listening: Listening, job_id: str, got: list[str]) -> bool:
    got += listening.wait(0.1)
    return job_id in got


def count_jobs(ctx: Context) -> int:
    return sum(statuses(ctx).values())


def sql_enqueue(connection: Connection, **fields: Any) -> Any:
    """jobfleet.enqueue() with named arguments, the payload given as JSON text."""
    names = ", ".join(
        f"{name} => CAST(:{name} AS json)" if name == "payload" else f"{name} => :{name}"
        for name in fields
    )
    return connection.execute(text(f"SELECT * FROM jobfleet.enqueue({names})"), fields).one()


# -- commit, rollback, notification ---------------------------------------------------------


def test_a_job_exists_once_its_transaction_commits_and_is_announced_then(
    ctx: Context, listening: Listening
) -> None:
    engine = ctx.db.engine
    with Session(engine) as session, session.begin():
        session.execute(text("SELECT 1"))  # the application's own work
        done = enqueue(session, "acme", "noop", {"order": 7}, queue="mail", priority=3)
        job_id = str(done.job.id)
        assert done.created and done.job.status == "queued" and done.job.tenant == "acme"
        # Not there for anyone else until the commit, and not announced yet.
        assert count_jobs(ctx) == 0
    got: list[str] = []
    wait_until(lambda: heard(listening, job_id, got), timeout=10, what="the notification")
    row = job_row(ctx, job_id)
    assert (row.queue, row.priority, row.payload, row.status) == ("mail", 3, {"order": 7}, "queued")
    # The API's defaults, as migrate published them; an id as time-ordered as the API's.
    assert (row.max_retries, row.timeout_seconds) == (3, 300)
    assert uuid.UUID(job_id).version == 7


def test_a_rolled_back_job_never_exists_and_is_never_announced(
    ctx: Context, listening: Listening
) -> None:
    engine = ctx.db.engine
    with engine.connect() as connection:
        with connection.begin() as transaction:
            lost = str(enqueue(connection, "acme", "noop").job.id)
            transaction.rollback()
        with connection.begin():
            kept = str(enqueue(connection, "acme", "noop").job.id)
    # Notifications arrive in commit order: once the later job's arrived, the earlier one's
    # would have too.
    got: list[str] = []
    wait_until(lambda: heard(listening, kept, got), timeout=10, what="the notification")
    assert got == [kept]
    with ctx.db.transaction() as session:
        assert session.scalar(text("SELECT count(*) FROM jobs WHERE id = :id"), {"id": lost}) == 0


def test_a_scheduled_job_waits_for_its_time(ctx: Context) -> None:
    with ctx.db.engine.begin() as connection:
        later = enqueue(connection, "acme", "noop", delay_seconds=600)
        at = datetime.now(UTC) + timedelta(hours=1)
        timed = enqueue(connection, "acme", "noop", run_at=at)
    assert later.job.status == timed.job.status == "scheduled"
    assert timed.job.run_at == at


# -- idempotency -----------------------------------------------------------------------------


def test_one_key_names_one_job_across_transactions_and_paths(ctx: Context) -> None:
    request = {"task": "noop", "payload": {"order": 1, "total": 9.5}, "queue": "mail"}
    engine = ctx.db.engine
    with engine.begin() as connection:
        first = enqueue(connection, "acme", idempotency_key="receipt:1", **request)
    with Session(engine) as session, session.begin():
        again = enqueue(session, "acme", idempotency_key="receipt:1", **request)
    assert first.created and not again.created and again.job.id == first.job.id
    # The API's submit and the SQL function read the same fingerprint: the same job.
    by_api = jobs.submit(ctx, PRODUCER, JobCreate(idempotency_key="receipt:1", **request))
    assert not by_api.created and by_api.job.id == first.job.id
    with engine.begin() as connection:
        job_id, job_status, created = sql_enqueue(
            connection,
            tenant="acme",
            task="noop",
            payload='{"total": 9.5, "order": 1}',
            queue="mail",
            idempotency_key="receipt:1",
        )
    assert (job_id, job_status, created) == (first.job.id, "queued", False)
    # Another tenant's key is its own.
    with engine.begin() as connection:
        other = enqueue(connection, "globex", idempotency_key="receipt:1", **request)
    assert other.created and other.job.id != first.job.id
    assert count_jobs(ctx) == 2


def test_a_key_reused_for_another_request_is_a_conflict_that_spares_the_transaction(
    ctx: Context,
) -> None:
    engine = ctx.db.engine
    with engine.begin() as connection:
        first = enqueue(connection, "acme", "noop", {"n": 1}, idempotency_key="k")
    with engine.begin() as connection:
        with pytest.raises(IdempotencyConflict, match=f"different request \\(job {first.job.id}"):
            enqueue(connection, "acme", "noop", {"n": 2}, idempotency_key="k")
        # Nothing failed in Postgres: the application's transaction goes on and commits.
        kept = enqueue(connection, "acme", "noop", {"n": 2}, idempotency_key="k2")
    assert job_row(ctx, str(kept.job.id)).status == "queued"
    with engine.begin() as connection, pytest.raises(DBAPIError) as error:
        sql_enqueue(connection, tenant="acme", task="noop", payload='{"n": 2}', idempotency_key="k")
    assert error.value.orig.pgcode == "23505"  # type: ignore[union-attr]
    assert "used for a different request" in str(error.value.orig)
    assert count_jobs(ctx) == 2


# -- validation ------------------------------------------------------------------------------

# Each: the fields of a call, and the field both paths must name.
INVALID: list[tuple[dict[str, Any], str]] = [
    ({"tenant": ""}, "tenant"),
    ({"tenant": "t" * 129}, "tenant"),
    ({"task": "send email"}, "task"),
    ({"task": "t" * 129}, "task"),
    ({"queue": "mail/out"}, "queue"),
    ({"queue": ""}, "queue"),
    ({"priority": 10}, "priority"),
    ({"priority": -1}, "priority"),
    ({"idempotency_key": ""}, "idempotency_key"),
    ({"idempotency_key": "k" * 256}, "idempotency_key"),
    ({"max_retries": 101}, "max_retries"),
    ({"timeout_seconds": 0}, "timeout_seconds"),
    ({"delay_seconds": -1.0}, "delay_seconds"),
    ({"delay_seconds": 366 * 86_400 + 1.0}, "delay_seconds"),
    ({"delay_seconds": float("nan")}, "delay_seconds"),
    ({"payload": [[[]]] * 1}, ""),  # valid: three levels; the deep one is below
    ({"payload": json.loads("[" * 65 + "]" * 65)}, "payload"),
    ({"payload": {"n": 2**63}}, "payload"),
    ({"payload": {"text": "nul\u0000"}}, "payload"),
]


@pytest.mark.parametrize(("fields", "field"), INVALID)
def test_both_paths_refuse_what_the_api_refuses_naming_the_field(
    ctx: Context, fields: dict[str, Any], field: str
) -> None:
    call = {"tenant": "acme", "task": "noop", **fields}
    engine = ctx.db.engine
    if not field:  # the control: both accept it
        with engine.begin() as connection:
            enqueue(connection, **call)
            sql_enqueue(connection, **{**call, "payload": json.dumps(call["payload"])})
        assert count_jobs(ctx) == 2
        return
    with engine.begin() as connection:
        with pytest.raises(InvalidRequest) as invalid:
            enqueue(connection, **call)
        assert [e["loc"][0] for e in invalid.value.extra["errors"]] == [field]
        assert str(invalid.value).startswith(f"invalid job: {field}")
    as_sql = dict(call)
    if "payload" in as_sql:
        # As an application would write it: JSON text (a NUL written as \u0000).
        as_sql["payload"] = json.dumps(as_sql["payload"])
    with engine.begin() as connection, pytest.raises(DBAPIError) as error:
        sql_enqueue(connection, **as_sql)
    orig: Any = error.value.orig
    assert orig.pgcode == "22023", orig
    assert orig.diag.column_name == field
    assert f"jobfleet.enqueue: {field}" in str(orig)
    assert count_jobs(ctx) == 0


def test_run_at_and_delay_together_are_refused_by_both(ctx: Context) -> None:
    at = datetime.now(UTC)
    with (
        ctx.db.engine.begin() as connection,
        pytest.raises(InvalidRequest, match="run_at or delay_seconds, not both"),
    ):
        enqueue(connection, "acme", "noop", run_at=at, delay_seconds=1.0)
    with ctx.db.engine.begin() as connection, pytest.raises(DBAPIError, match="not both"):
        sql_enqueue(connection, tenant="acme", task="noop", run_at=at, delay_seconds=1.0)


# -- defaults --------------------------------------------------------------------------------


def test_jobs_get_the_defaults_migrate_published(settings: Settings, ctx: Context) -> None:
    assert publish_job_defaults(settings.database_url, JobDefaults(7, 60, 45))
    try:
        with ctx.db.engine.begin() as connection:
            by_python = enqueue(connection, "acme", "noop")
            job_id, _, _ = sql_enqueue(connection, tenant="acme", task="noop")
            given = enqueue(connection, "acme", "noop", max_retries=0, timeout_seconds=30)
        for row in (job_row(ctx, str(by_python.job.id)), job_row(ctx, str(job_id))):
            assert (row.max_retries, row.timeout_seconds) == (7, 45)  # 60, capped at 45
        assert (given.job.max_retries, given.job.timeout_seconds) == (0, 30)
    finally:
        publish_job_defaults(settings.database_url, SETTINGS_DEFAULTS)


# -- psycopg2 --------------------------------------------------------------------------------


def test_a_psycopg2_connection_commits_or_rolls_back_its_job(ctx: Context, pg: Any) -> None:
    with pg.cursor() as cursor:
        cursor.execute("SELECT 1")  # the application's transaction is open
    lost = enqueue_psycopg2(pg, "acme", "noop", {"n": 1})
    assert lost.created and isinstance(lost.job.id, uuid.UUID)
    pg.rollback()
    kept = enqueue_psycopg2(pg, "acme", "noop", {"n": 2}, idempotency_key="p")
    assert count_jobs(ctx) == 0  # not committed yet
    pg.commit()
    assert job_row(ctx, str(kept.job.id)).payload == {"n": 2}
    with ctx.db.transaction() as session:
        assert (
            session.scalar(text("SELECT count(*) FROM jobs WHERE id = :id"), {"id": lost.job.id})
            == 0
        )
    again = enqueue_psycopg2(pg, "acme", "noop", {"n": 2}, idempotency_key="p")
    pg.commit()
    assert not again.created and again.job.id == kept.job.id
    # Each statement is compiled once, for good: more calls compile nothing more.
    compiled = set(dbapi._compiled)
    enqueue_psycopg2(pg, "acme", "noop", {"n": 2}, idempotency_key="p")
    enqueue_psycopg2(pg, "acme", "noop", {"n": 3})
    pg.rollback()
    assert set(dbapi._compiled) == compiled
    # The application's own cursors read uuids as they always did (text, by default).
    with pg.cursor() as cursor:
        cursor.execute("SELECT gen_random_uuid()")
        assert isinstance(cursor.fetchone()[0], str)
    pg.rollback()


def test_in_autocommit_mode_the_job_commits_at_once(ctx: Context, pg: Any) -> None:
    pg.autocommit = True
    done = enqueue_psycopg2(pg, "acme", "noop")
    assert job_row(ctx, str(done.job.id)).status == "queued"


# -- the SQL function's fingerprint is the API's ------------------------------------------------

_TEXT = (
    "abcXYZ019 _-:./"  # plain
    '"\\'  # escaped by both
    "\x01\x08\x09\x0a\x0c\x0d\x1f\x7f"  # control characters
    "é€\u2028\u00a0中"  # not escaped
    "\U0001f600\U00010348"  # beyond the basic plane
)
_FLOATS = [
    0.0, -0.0, 5e-324, 1e16, 1e15, 9999999999999998.0, 1e-5, 9.99999e-6, 1e-6, 0.1, 100.0, -2.5,
    1.7976931348623157e308, 2.2250738585072014e-308, 123456789012345.6, 6.89891494110039e16,
]  # fmt: skip


def _float(rng: random.Random) -> float:
    # Storable ones only: past the signed 64-bit range, jsonb gives a float back as an integer
    # (1e19 as 10000000000000000000), and a submit refuses it.
    value = _any_float(rng)
    return value if -(2**63) <= value <= 2**63 - 1 else math.ldexp(value, -1100)


def _any_float(rng: random.Random) -> float:
    kind = rng.randrange(5)
    if kind == 0:
        value = struct.unpack("<d", rng.getrandbits(64).to_bytes(8, "little"))[0]
        return value if value == value and abs(value) != float("inf") else 1.5
    if kind == 1:
        return rng.uniform(-1, 1) * 10.0 ** rng.randint(-30, 30)
    if kind == 2:
        return round(rng.uniform(-1000, 1000), rng.randint(0, 6))
    if kind == 3:
        return float(rng.randint(-(10**17), 10**17))
    return rng.choice(_FLOATS)


def _text(rng: random.Random) -> str:
    return "".join(rng.choice(_TEXT) for _ in range(rng.randint(0, 8)))


def _document(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.randrange(8 if depth < 4 else 6)
    if kind == 0:
        return rng.choice([None, True, False])
    if kind == 1:
        return rng.choice([0, -1, 2**63 - 1, -(2**63), rng.randint(-(2**63), 2**63 - 1)])
    if kind == 2:
        return _float(rng)
    if kind in (3, 4, 5):
        return _text(rng)
    if kind == 6:
        return [_document(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    return {_text(rng): _document(rng, depth + 1) for _ in range(rng.randint(0, 4))}


# JSON texts whose numbers and keys only the text tells apart: exponents, trailing zeros, a
# repeated key (the last one wins), spaces.
CRAFTED = [
    '{"a": 1E2, "b": 1e-7, "c": -0, "d": -0.0, "e": 1.50, "f": 2e+0}',
    '{"k": 1, "k": {"z": 2, "a": [3, 4.0]}, " k": null}',
    '[ 1 , 2.0 ,"\\u00e9\\ud83d\\ude00\\/" ]',
    '"just a string"',
    "123456789012345678",
    "0.000001",
    "{}",
    "[]",
]


def test_the_sql_fingerprint_equals_the_api_fingerprint(ctx: Context) -> None:
    rng = random.Random(20270201)
    texts = list(CRAFTED)
    for _ in range(300):
        texts.append(json.dumps(_document(rng), ensure_ascii=rng.random() < 0.5))
    statement = text(
        "SELECT jobfleet.fingerprint(:task, CAST(:payload AS json), :queue, :priority, "
        ":run_at, :delay_seconds, :max_retries, :timeout_seconds)"
    )
    with ctx.db.engine.connect() as connection:
        for number, payload in enumerate(texts):
            fields: dict[str, Any] = {
                "task": rng.choice(["noop", "send.mail:v2"]),
                "queue": rng.choice(["default", "q-1.x"]),
                "priority": rng.randint(0, 9),
                "run_at": None,
                "delay_seconds": None,
                "max_retries": rng.choice([None, 0, 100]),
                "timeout_seconds": rng.choice([None, 1, 2**31 - 1]),
            }
            if number % 3 == 1:
                fields["run_at"] = datetime(
                    rng.randint(1, 9999), rng.randint(1, 12), rng.randint(1, 28),
                    rng.randint(0, 23), rng.randint(0, 59), rng.randint(0, 59),
                    rng.choice([0, rng.randint(1, 999_999)]), tzinfo=UTC,
                )  # fmt: skip
            elif number % 3 == 2:
                fields["delay_seconds"] = rng.choice([0, 5, 0.25, rng.uniform(0, 86_400)])
            request = JobCreate(payload=json.loads(payload), **fields)
            in_sql = connection.scalar(statement, {**fields, "payload": payload})
            assert in_sql == request.fingerprint(), payload


# -- the listener's push -----------------------------------------------------------------------


def test_the_listener_pushes_what_still_waits_and_ignores_what_is_not_a_job(
    ctx: Context, listening: Listening
) -> None:
    with ctx.db.engine.begin() as connection:
        now = enqueue(connection, "acme", "noop", queue="mail", priority=5).job
        later = enqueue(connection, "acme", "noop", delay_seconds=600).job
        gone = enqueue(connection, "acme", "noop").job
        connection.execute(
            text("UPDATE jobs SET status = 'cancelled' WHERE id = :id"), {"id": gone.id}
        )
    payloads = [str(now.id), str(later.id), str(gone.id), "not-a-job", str(uuid.uuid4())]
    assert push(ctx, listening, payloads) == 2
    client, keys = ctx.redis.client, ctx.keys
    assert ready.head(client, keys, Place("mail", 5, "acme"), 10) == [str(now.id)]
    assert delayed.due_ids(client, keys, later.run_at.timestamp() + 1, 10) == [str(later.id)]
    assert ready.head(client, keys, Place("default", 0, "acme"), 10) == []
