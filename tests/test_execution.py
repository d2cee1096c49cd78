"""The claim and the fenced finish, called directly: no fleet needed to break them."""

from __future__ import annotations

import dataclasses
import uuid

import pytest
from sqlalchemy import text

from app.domain.states import AttemptOutcome
from app.services import execution
from app.services.context import Context
from tests.fleet_support import attempts, job_row, submit


def test_a_claim_takes_only_queued_jobs(ctx: Context) -> None:
    job_id = submit(ctx, task="noop")
    first = execution.claim(ctx, [job_id], "w1")
    again = execution.claim(ctx, [job_id], "w2")
    assert [str(j.id) for j in first] == [job_id] and again == []
    row = job_row(ctx, job_id)
    assert (row.status, row.attempts, row.worker_id) == ("processing", 1, "w1")
    assert row.lease_expires_at > row.started_at


def test_a_finish_with_a_stale_lease_token_changes_nothing(ctx: Context) -> None:
    job_id = submit(ctx, task="noop")
    (claimed,) = execution.claim(ctx, [job_id], "w1")
    stale = dataclasses.replace(claimed, lease_token=uuid.uuid4())
    assert execution.complete(ctx, stale.lease, '"late"') is False
    assert execution.fail(ctx, stale.lease, "late", AttemptOutcome.FAILED) is None
    row = job_row(ctx, job_id)
    assert (row.status, row.result, row.lease_token) == ("processing", None, claimed.lease_token)
    assert attempts(ctx, job_id) == []

    assert execution.complete(ctx, claimed.lease, '{"ok": true}') is True
    assert execution.complete(ctx, claimed.lease, '"twice"') is False
    row = job_row(ctx, job_id)
    assert (row.status, row.result) == ("completed", {"ok": True})
    assert [(a.attempt, a.outcome) for a in attempts(ctx, job_id)] == [(1, "completed")]


def test_lease_renewal_extends_only_current_leases(ctx: Context) -> None:
    job_id = submit(ctx, task="noop")
    (claimed,) = execution.claim(ctx, [job_id], "w1")
    before = job_row(ctx, job_id).lease_expires_at
    held = execution.renew_leases(
        ctx,
        [
            (claimed.id, claimed.lease_token),
            (claimed.id, uuid.uuid4()),
            (uuid.uuid4(), claimed.lease_token),
        ],
    )
    assert held == {claimed.id: False}
    assert job_row(ctx, job_id).lease_expires_at >= before


def test_results_postgres_cannot_store_are_refused_up_front() -> None:
    import pytest

    for result in ("a\x00b", {"nested": ["\x00"]}, {1, 2}):
        with pytest.raises(execution.ResultNotSerialisable):
            execution.encode_result(result)
    assert execution.encode_result({"text": "\\u0000 as six characters"}) == (
        '{"text":"\\\\u0000 as six characters"}'
    )


def test_unclaim_hands_back_unstarted_jobs_unless_cancel_was_asked(ctx: Context) -> None:
    keep, drop = submit(ctx, task="noop"), submit(ctx, task="noop")
    claimed = execution.claim(ctx, [keep, drop], "w1")
    ctx.redis.client.delete(ctx.keys.ready("default", 0, "acme"))
    with ctx.db.transaction() as session:
        session.execute(
            text("UPDATE jobs SET cancel_requested = true WHERE id = :id"), {"id": drop}
        )
    execution.unclaim(ctx, [job.lease for job in claimed])
    assert (job_row(ctx, keep).status, job_row(ctx, keep).attempts) == ("queued", 0)
    assert job_row(ctx, drop).status == "cancelled"
    assert ctx.redis.client.lrange(ctx.keys.ready("default", 0, "acme"), 0, -1) == [keep.encode()]


def _nested(depth: int) -> object:
    document: object = []
    for _ in range(depth - 1):
        document = [document]
    return document


@pytest.mark.parametrize(
    "result", [2**63, float("nan"), "a\u0000b", {"k": [float("inf")]}, _nested(70)]
)
def test_a_result_postgres_or_clients_cannot_hold_is_refused(result: object) -> None:
    with pytest.raises(execution.ResultNotSerialisable):
        execution.encode_result(result)


def test_a_storable_result_is_encoded_once() -> None:
    encoded = execution.encode_result({"n": 2**63 - 1, "s": "é", "l": [1.5, None]})
    assert encoded == '{"n":9223372036854775807,"s":"é","l":[1.5,null]}'
