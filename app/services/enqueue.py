"""Enqueue inside the caller's transaction (app/enqueue.py is what applications import).

The job is validated as POST /jobs validates it (JobCreate), given the defaults `migrate`
published (jobfleet.job_defaults), and inserted with the submit path's own statement and
idempotency rule, on the caller's connection: it exists if and when the caller commits. The
same statement sends `pg_notify` on the enqueued channel, which Postgres delivers only at
that commit; the listener (app/services/listening.py) then pushes the id to Redis. Nothing
here opens a connection, commits, or touches Redis.
"""

from __future__ import annotations

from typing import Any

from psycopg2.extensions import connection as PgConnection  # type: ignore[import-untyped]
from pydantic import TypeAdapter, ValidationError

from app.domain.errors import IdempotencyConflict, InvalidRequest
from app.domain.schemas import JobCreate, TenantName
from app.services import jobs
from app.services.jobs import Submitted
from app.store import jobs as job_store
from app.store.dbapi import DbapiSession

_TENANT: TypeAdapter[str] = TypeAdapter(TenantName)


def request_of(tenant: str, fields: dict[str, Any]) -> JobCreate:
    """The request as POST /jobs would read it; InvalidRequest names every invalid field."""
    errors: list[dict[str, Any]] = []
    try:
        _TENANT.validate_python(tenant)
    except ValidationError as exc:
        errors += [{"loc": ["tenant"], "msg": e["msg"], "type": e["type"]} for e in exc.errors()]
    request = None
    try:
        request = JobCreate(**fields)
    except ValidationError as exc:
        errors += [
            {"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in exc.errors()
        ]
    if errors or request is None:
        detail = "; ".join(
            ".".join(str(part) for part in e["loc"]) + ": " + str(e["msg"]) for e in errors
        )
        raise InvalidRequest(f"invalid job: {detail or 'invalid request'}", errors=errors)
    return request


def enqueue_in(session: job_store.Executor, tenant: str, request: JobCreate) -> Submitted:
    """Insert the job in the session's open transaction: created, or the existing job of its
    idempotency key when the request is the same; IdempotencyConflict when it is not."""
    defaults = job_store.job_defaults(session)
    new = jobs.new_job(defaults, tenant, request)
    (result,) = jobs.insert_or_find(session, tenant, [new], full=True)
    if isinstance(result, IdempotencyConflict):
        raise result
    if result.created:
        job_store.notify_enqueued(session, [new.id])
    return result


def enqueue_on_psycopg2(connection: PgConnection, tenant: str, request: JobCreate) -> Submitted:
    """The same, on a plain psycopg2 connection (in its open transaction, or the one its
    first statement opens)."""
    return enqueue_in(DbapiSession(connection), tenant, request)
