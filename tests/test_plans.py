"""Claims, finishes and lease renewals find their jobs by primary key, even when the planner's
statistics say the queue is empty (a queue filled since the last ANALYZE), so their cost never
grows with the depth of the queue or the number of running jobs. The queries over running and
scheduled jobs read their partial indexes by plain index scans, which mark the dead entries they
meet (app/store/scans.py)."""

from __future__ import annotations

import uuid

import psycopg2.errors
import pytest
from sqlalchemy import text
from sqlalchemy.exc import ProgrammingError
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import TextClause

from app.services.context import Context
from app.store.claims import (
    _CLAIM,
    _COMPLETE_MANY,
    _EXTEND,
    _LEASES_WHERE,
    _UNCLAIM,
    _UNRENEWED,
)
from app.store.drain import _QUEUES_WITH_WORK
from app.store.jobs import _CANCEL, _REQUEST_CANCEL, _REQUEUE
from app.store.maintenance import _PROMOTE
from app.store.scans import plain_index_scans


def _plan(session: Session, statement: TextClause, params: dict[str, object]) -> str:
    rows = session.execute(text(f"EXPLAIN {statement.text}"), params).all()
    return "\n".join(row[0] for row in rows)


def _fill(session: Session, status: str, count: int) -> list[uuid.UUID]:
    return list(
        session.scalars(
            text(
                "INSERT INTO jobs (tenant, queue, task, status, max_retries, timeout_seconds, "
                "lease_token) SELECT 'acme', 'deep', 'noop', :status, 3, 300, "
                "gen_random_uuid() FROM generate_series(1, :n) RETURNING id"
            ),
            {"status": status, "n": count},
        ).all()
    )


def test_claim_and_finish_use_the_primary_key_with_statistics_of_an_empty_table(
    ctx: Context,
) -> None:
    with ctx.db.transaction() as session:
        session.execute(text("ANALYZE jobs"))  # the statistics of an empty table
    with ctx.db.transaction() as session:
        queued = _fill(session, "queued", 5000)
        running = _fill(session, "processing", 5000)
        ids = [str(job_id) for job_id in running[:10]]
        claims = [
            _plan(
                session,
                _CLAIM,
                {"ids": queued[:10], "worker_id": "w", "lease_seconds": 30, "tenant": tenant},
            )
            for tenant in (None, "acme")  # the native fleet's claim, and a worker key's
        ]
        finish = _plan(
            session, _COMPLETE_MANY, {"ids": ids, "tokens": ids, "results": ["null"] * 10}
        )
        unclaim = _plan(session, _UNCLAIM, {"ids": ids, "tokens": ids})
        renew = _plan(session, _EXTEND, {"ids": ids, "tokens": ids, "lease_seconds": 10})
        # The producer's steps by id: cancel, a cancel request, retry.
        by_id = [
            _plan(session, statement, {"id": job_id, "tenant": "acme", "from_states": ["failed"]})
            for statement, job_id in (
                (_CANCEL, queued[0]),
                (_REQUEST_CANCEL, running[0]),
                (_REQUEUE, queued[0]),
            )
        ]
    for plan in (*claims, finish, unclaim, renew, *by_id):
        assert "jobs_pkey" in plan, plan
        assert "ix_jobs_queued_by_tenant" not in plan, plan
        assert "ix_jobs_processing_token" not in plan, plan
        assert "Seq Scan on jobs" not in plan, plan


def test_an_error_inside_plain_index_scans_is_the_error_raised(ctx: Context) -> None:
    """A failed statement aborts the transaction: the setting is not restored in it (which
    would fail too, and be the error reported), and the rollback undoes it."""
    with (
        pytest.raises(ProgrammingError) as raised,
        ctx.db.transaction() as session,
        plain_index_scans(session),
    ):
        session.execute(text("SELECT * FROM no_such_table"))
    assert isinstance(raised.value.orig, psycopg2.errors.UndefinedTable), raised.value
    with ctx.db.transaction() as session:
        assert session.scalar(text("SELECT current_setting('enable_bitmapscan')")) == "on"


def test_queries_of_work_in_play_read_their_indexes_by_plain_index_scans(ctx: Context) -> None:
    with ctx.db.transaction() as session:
        session.execute(text("ANALYZE jobs"))  # the statistics of an empty table
    with ctx.db.transaction() as session:
        _fill(session, "processing", 5000)
        _fill(session, "scheduled", 5000)
        _fill(session, "completed", 20000)
        with plain_index_scans(session):
            promote = _plan(session, _PROMOTE, {"limit": 1000})
            plans = [
                _plan(
                    session,
                    text(_LEASES_WHERE.format(condition=condition)),
                    {"limit": 1000, "worker_id": "host:1:1"},
                )
                for condition in ("lease_expires_at < now()", "worker_id = :worker_id")
            ]
            plans.append(_plan(session, _UNRENEWED, {"lease": 10, "silent": 4, "limit": 1000}))
            plans.append(_plan(session, _QUEUES_WITH_WORK, {"queues": ["deep"]}))
        # Outside, the same statement plans as the planner likes: a bitmap scan here.
        outside = _plan(session, _UNRENEWED, {"lease": 10, "silent": 4, "limit": 1000})
    for plan in plans:
        assert "Index Scan using ix_jobs_processing_token" in plan, plan
        assert "Bitmap" not in plan and "Seq Scan on jobs" not in plan, plan
    assert "Bitmap Index Scan on ix_jobs_processing_token" in outside, outside
    assert "Index Scan using ix_jobs_scheduled_run_at" in promote, promote
    assert "Bitmap" not in promote and "Seq Scan on jobs" not in promote, promote
