"""Bulk operations: one action on every job that matches a filter, run in bounded batches.
Pure data and rules, no I/O.

The filter is the job listing's own search (`JobQuery`), kept as JSON in the operation's row so
that any process can resume it.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from app.domain.errors import InvalidRequest
from app.domain.filters import JobQuery
from app.domain.states import CANCELLABLE, DELETABLE, RETRYABLE, JobStatus

# The filter of a bulk operation: the same search the job listing takes.
BulkQuery = JobQuery


class BulkAction(StrEnum):
    CANCEL = "cancel"  # queued or scheduled -> cancelled (running jobs are left to finish)
    RETRY = "retry"  # failed or cancelled -> queued, with a fresh retry budget
    REPLAY = "replay"  # failed (the dead-letter queue) -> queued, with a fresh retry budget
    DELETE = "delete"  # any job no worker holds (not processing) is deleted


class BulkState(StrEnum):
    PENDING = "pending"  # started; no batch has run yet
    RUNNING = "running"  # batches are running
    DONE = "done"  # every matching job was reached
    CANCELLED = "cancelled"  # stopped before its end; the batches already run stay done


ACTIVE_STATES = frozenset({BulkState.PENDING, BulkState.RUNNING})

# The statuses each action moves jobs out of: the sets of the one state table.
SOURCES: dict[BulkAction, frozenset[JobStatus]] = {
    BulkAction.CANCEL: CANCELLABLE,
    BulkAction.RETRY: RETRYABLE,
    BulkAction.REPLAY: frozenset({JobStatus.FAILED}),
    BulkAction.DELETE: DELETABLE,
}


def statuses_for(action: BulkAction, query: BulkQuery) -> frozenset[JobStatus]:
    """The statuses the operation acts on: the action's sources, narrowed to the filter's
    status when it names one. A status the action cannot move is a request to refuse."""
    sources = SOURCES[action]
    if query.status is None:
        return sources
    if query.status not in sources:
        allowed = ", ".join(sorted(s.value for s in sources))
        raise InvalidRequest(
            f"cannot {action} jobs that are {query.status}: {action} takes {allowed} jobs",
            errors=[
                {
                    "loc": ["body", "filter", "status"],
                    "msg": f"{action} takes {allowed} jobs",
                    "type": "value_error",
                }
            ],
        )
    return frozenset({query.status})


def query_to_json(query: BulkQuery) -> dict[str, Any]:
    """The filter as a JSON object, without its unset fields (a tenant of None: every one)."""
    return query.to_json()


def query_from_json(data: dict[str, Any]) -> BulkQuery:
    return JobQuery.from_json(data)


@dataclass(frozen=True, slots=True)
class BulkOperation:
    """One row of `bulk_operations`: what to do, to which jobs, and how far it got."""

    id: uuid.UUID
    owner: str  # the tenant of the key that started it; who may read and cancel it
    key_id: uuid.UUID | None
    action: BulkAction
    query: BulkQuery  # its tenant is the jobs' tenant (None: every tenant, an admin's)
    state: BulkState
    total: int  # jobs that matched when it started
    done: int  # jobs it changed
    skipped: int  # jobs a batch reached that had changed state meanwhile
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None
    request_id: str | None
    # The keyset walk: jobs with ids in (position, last_id], in id order.
    position: uuid.UUID | None  # the id of the last job reached; None: none yet
    last_id: uuid.UUID | None  # the largest matching id at start; None: nothing matched


@dataclass(frozen=True, slots=True)
class BatchOutcome:
    """What one batch did: the jobs it reached, changed and skipped, and where it stopped."""

    reached: int
    changed: list[Any]  # the changed jobs (records of requeued ones are announced to Redis)
    position: uuid.UUID | None
    finished: bool  # no matching job is left after `position`
