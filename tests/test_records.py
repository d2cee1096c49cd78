"""The store hands back immutable records of app/domain/records.py, never a SQLAlchemy object
or row, and each record's fields hold the columns of their names."""

from __future__ import annotations

import dataclasses
import uuid
from datetime import UTC, datetime

import pytest

from app.domain.filters import JobQuery
from app.domain.records import (
    AttemptRecord,
    BriefJob,
    Claimed,
    JobMatches,
    JobRecord,
    KeyRecord,
    QueueCounts,
    QueueGauges,
)
from app.domain.schemas import JobCreate, JobOut
from app.domain.states import AttemptOutcome, JobStatus
from app.services import auth, execution, jobs
from app.services.context import Context
from app.store import jobs as job_store
from app.store import keys as key_store
from app.store import search as search_store


def test_the_brief_reader_puts_each_column_in_its_field() -> None:
    row = tuple(f"<{name}>" for name in BriefJob._fields)
    row = (*row[:2], "scheduled", *row[3:])
    brief = job_store._brief(row)  # type: ignore[arg-type]
    assert brief.status is JobStatus.SCHEDULED
    assert {name: getattr(brief, name) for name in BriefJob._fields if name != "status"} == {
        name: f"<{name}>" for name in BriefJob._fields if name != "status"
    }


def _principal(ctx: Context) -> auth.Principal:
    record, plain = auth.create_key(ctx, "acme", [auth.Scope.PRODUCER], "records")
    assert isinstance(record, KeyRecord) and plain.startswith(auth.KEY_PREFIX)
    return auth.authenticate(ctx, f"Bearer {plain}")


def test_the_store_hands_back_records(ctx: Context) -> None:
    principal = _principal(ctx)
    submitted = jobs.submit(ctx, principal, JobCreate(task="noop", payload={"n": 1}))
    assert isinstance(submitted.record, JobRecord)
    (brief,) = jobs.submit_many(
        ctx, principal, [JobCreate(task="noop", idempotency_key="k")], full=False
    )
    assert isinstance(brief, jobs.Submitted) and isinstance(brief.record, BriefJob)
    assert brief.record.status is JobStatus.QUEUED

    (claimed,) = execution.claim(ctx, [str(submitted.record.id)], "w1")
    assert isinstance(claimed, Claimed)
    assert execution.complete(ctx, claimed.lease, '{"ok": true}')

    with ctx.db.transaction() as session:
        job = job_store.get_job(session, submitted.record.id, "acme")
        (attempt,) = job_store.attempts_of(session, submitted.record.id)
        found = search_store.search_jobs(session, JobQuery("acme"), 10)
        by_key = job_store.get_by_idempotency_keys(session, "acme", ["k"], full=True)
        counts = job_store.queue_counts(session)
        gauges = job_store.cheap_counts(session)
        keys = key_store.list_keys(session, "acme", include_revoked=False)
    assert isinstance(job, JobRecord) and job.status is JobStatus.COMPLETED
    assert job.result == {"ok": True} and job.payload == {"n": 1}
    assert isinstance(attempt, AttemptRecord) and attempt.outcome == AttemptOutcome.COMPLETED
    assert isinstance(found, JobMatches) and found.total == 2 and found.total_exact
    assert all(isinstance(j, JobRecord) for j in found.jobs)
    assert isinstance(by_key["k"], JobRecord) and by_key["k"].id == brief.record.id
    assert counts == [
        QueueCounts("default", {"completed": 1, "queued": 1}, counts[0].oldest_queued_at)
    ]
    assert isinstance(gauges, QueueGauges) and gauges.processing == {}
    assert [k.name for k in keys] == ["records"] and isinstance(keys[0].scopes, tuple)

    # Immutable, and shaped for a reply as a row was.
    with pytest.raises(dataclasses.FrozenInstanceError):
        job.status = JobStatus.QUEUED  # type: ignore[misc]
    assert JobOut.model_validate(job).model_dump()["status"] == "completed"


def test_a_job_record_holds_every_column_under_its_name(ctx: Context) -> None:
    principal = _principal(ctx)
    run_at = datetime(2999, 1, 1, tzinfo=UTC)
    request = JobCreate(task="echo", queue="q", priority=7, run_at=run_at, max_retries=4)
    record = jobs.submit(ctx, principal, request).record
    assert isinstance(record, JobRecord)
    assert (record.tenant, record.queue, record.task, record.priority) == ("acme", "q", "echo", 7)
    assert (record.status, record.run_at, record.max_retries) == ("scheduled", run_at, 4)
    assert record.request_fingerprint == request.fingerprint()
    assert record.attempts == 0 and record.lease_token is None and not record.cancel_requested
    with ctx.db.transaction() as session:
        assert job_store.get_job(session, record.id, None) == record
        assert job_store.get_job(session, record.id, "other") is None
        assert job_store.get_job(session, uuid.uuid4(), None) is None
