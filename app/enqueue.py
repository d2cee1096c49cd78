"""Enqueue a job inside your application's own Postgres transaction.

For applications that share Jobfleet's database: the job is inserted on your connection, in
your transaction. Commit, and the job exists and runs; roll back, and it never existed. No
job for an order that rolled back, no order whose job was lost on the way to an HTTP API.

    from app.enqueue import enqueue

    with Session(engine) as session, session.begin():
        session.add(order)
        enqueue(session, "acme", "send_receipt", {"order": order.id},
                idempotency_key=f"receipt:{order.id}")

`enqueue` takes a SQLAlchemy Session or Connection, `enqueue_psycopg2` a psycopg2 connection.
Both validate the job as POST /jobs does (InvalidRequest names each invalid field), apply the
defaults `migrate` published from the settings, and follow the API's idempotency rule: a key
already used for the same request returns the existing job (`created` False), for a different
request raises IdempotencyConflict; both are JobfleetError. Neither opens a connection,
commits, or touches Redis: the commit is yours, and Postgres tells Jobfleet's listener about
the job when (and only if) it happens (see "Transactional enqueue" in docs/ARCHITECTURE.md).

The role your connection logs in as needs INSERT and SELECT on `jobs`, USAGE on the schema
`jobfleet` and SELECT on `jobfleet.job_defaults` (the application role `migrate` grants has
them). A role that should only enqueue can call the SQL function `jobfleet.enqueue(...)`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from psycopg2.extensions import connection as PgConnection  # type: ignore[import-untyped]
from sqlalchemy import Connection
from sqlalchemy.orm import Session

from app.domain.errors import IdempotencyConflict, InvalidRequest, JobfleetError
from app.services.enqueue import enqueue_in, enqueue_on_psycopg2, request_of
from app.services.jobs import Submitted

__all__ = [
    "Enqueued",
    "IdempotencyConflict",
    "InvalidRequest",
    "JobfleetError",
    "enqueue",
    "enqueue_psycopg2",
]

# What both return: `.job` (the job, as GET /jobs/{id} shows it, without its history) and
# `.created` (False: the idempotency key named an existing job of the same request).
Enqueued = Submitted

_EMPTY: Any = object()  # payload left out: {} (None is a JSON null payload)


def enqueue(
    db: Session | Connection,
    tenant: str,
    task: str,
    payload: Any = _EMPTY,
    *,
    queue: str = "default",
    priority: int = 0,
    idempotency_key: str | None = None,
    run_at: datetime | None = None,
    delay_seconds: float | None = None,
    max_retries: int | None = None,
    timeout_seconds: int | None = None,
) -> Enqueued:
    """Insert a job of `tenant` in the open transaction of `db` (a SQLAlchemy Session or
    Connection; one is begun if none is open). The fields are those of POST /jobs."""
    request = request_of(tenant, _fields(locals()))
    return enqueue_in(db, tenant, request)


def enqueue_psycopg2(
    connection: PgConnection,
    tenant: str,
    task: str,
    payload: Any = _EMPTY,
    *,
    queue: str = "default",
    priority: int = 0,
    idempotency_key: str | None = None,
    run_at: datetime | None = None,
    delay_seconds: float | None = None,
    max_retries: int | None = None,
    timeout_seconds: int | None = None,
) -> Enqueued:
    """The same on a psycopg2 connection, in its open transaction (or the one psycopg2 opens
    at its next statement). In autocommit mode the job commits at once, on its own."""
    request = request_of(tenant, _fields(locals()))
    return enqueue_on_psycopg2(connection, tenant, request)


def _fields(given: dict[str, Any]) -> dict[str, Any]:
    """The JobCreate fields among a call's arguments."""
    fields = {name: value for name, value in given.items() if name not in ("db", "connection")}
    fields.pop("tenant")
    if fields["payload"] is _EMPTY:
        del fields["payload"]
    return fields
