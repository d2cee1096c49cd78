"""Bulk operations: cancel, retry, replay or delete every job that matches a filter, not just
a page of them.

`preview` counts (a dry run). `start` writes the operation (its filter as JSON, the count at
start, the largest matching id) and its audit event in one transaction; then the bulk duty
(app/services/maintenance.py) advances it by `run_batch`: at most BULK_BATCH_SIZE jobs per
transaction, by keyset over the job id, the operation's position and counts committed with the
batch's changes. State lives in Postgres only, so any process's duty resumes an operation an
API or a fleet left midway, and a batch is never applied twice.

A producer's operation acts on its own tenant's jobs only: the filter's tenant is forced to its
key's. An admin's acts on every tenant's, or on the one its filter names.
"""

from __future__ import annotations

import dataclasses
import logging
import uuid
from collections import Counter
from datetime import datetime
from typing import Any

from pydantic import BaseModel
from uuid_utils.compat import uuid7

from app.domain.audit import AuditAction
from app.domain.bulk import (
    BulkAction,
    BulkOperation,
    BulkQuery,
    BulkState,
    query_to_json,
    statuses_for,
)
from app.domain.cursor import decode_position, encode_position
from app.domain.errors import BulkOperationEnded, BulkOperationNotFound
from app.domain.principal import Principal
from app.domain.records import JobRecord
from app.logging import context_field, log_context
from app.metrics import metrics
from app.services import audit
from app.services.context import Context
from app.services.jobs import announce_after_commit
from app.store import bulk as bulk_store

log = logging.getLogger(__name__)


class BulkOperationOut(BaseModel):
    id: uuid.UUID
    action: BulkAction
    filter: dict[str, Any]  # the filter as given; its tenant forced to a producer's own
    state: BulkState
    total: int  # jobs that matched when it started
    done: int  # jobs it changed so far
    skipped: int  # jobs a batch reached that had changed state meanwhile
    owner: str  # the tenant of the key that started it
    key_id: uuid.UUID | None
    request_id: str | None
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None


class BulkPage(BaseModel):
    items: list[BulkOperationOut]
    limit: int
    next_cursor: str | None = None


def shape(operation: BulkOperation) -> BulkOperationOut:
    return BulkOperationOut(
        id=operation.id,
        action=operation.action,
        filter=query_to_json(operation.query),
        state=operation.state,
        total=operation.total,
        done=operation.done,
        skipped=operation.skipped,
        owner=operation.owner,
        key_id=operation.key_id,
        request_id=operation.request_id,
        created_at=operation.created_at,
        updated_at=operation.updated_at,
        finished_at=operation.finished_at,
    )


def _scoped(principal: Principal, query: BulkQuery) -> BulkQuery:
    """The filter a key may act with: a producer's always names its own tenant."""
    if principal.is_admin:
        return query
    return dataclasses.replace(query, tenant=principal.tenant)


def _owner(principal: Principal) -> str | None:
    """Whose operations a key sees: an admin every one, any other key its tenant's."""
    return None if principal.is_admin else principal.tenant


def preview(ctx: Context, principal: Principal, action: BulkAction, query: BulkQuery) -> int:
    """How many jobs the operation would act on now: a dry run."""
    query = _scoped(principal, query)
    statuses = statuses_for(action, query)
    with ctx.db.transaction() as session:
        return bulk_store.count_matching(session, query, statuses)


def start(
    ctx: Context, principal: Principal, action: BulkAction, query: BulkQuery
) -> BulkOperationOut:
    """Write the operation and its audit event; the bulk duty runs it."""
    query = _scoped(principal, query)
    statuses = statuses_for(action, query)
    with ctx.db.transaction() as session:
        total = bulk_store.count_matching(session, query, statuses)
        last_id = bulk_store.last_matching(session, query, statuses) if total else None
        new = bulk_store.NewOperation(
            id=uuid7(),
            owner=principal.tenant,
            key_id=principal.key_id,
            action=action,
            query=query,
            total=total,
            last_id=last_id,
            request_id=context_field("request_id"),
        )
        operation = bulk_store.insert_operation(session, new)
        target = {
            "operation_id": operation.id,
            "action": action.value,
            "filter": query_to_json(query),
            "total": total,
        }
        audit.record(session, principal, AuditAction.BULK_START, target)
    log.info(
        "bulk operation started",
        extra={
            "action": "bulk_started",
            "operation_id": str(operation.id),
            "bulk_action": action.value,
            "total": total,
        },
    )
    return shape(operation)


def get(ctx: Context, principal: Principal, operation_id: uuid.UUID) -> BulkOperationOut:
    with ctx.db.transaction() as session:
        operation = bulk_store.get_operation(session, operation_id, _owner(principal))
    if operation is None:
        raise BulkOperationNotFound()
    return shape(operation)


def _operation_id(raw: str) -> uuid.UUID:
    return uuid.UUID(raw)


def list_operations(
    ctx: Context,
    principal: Principal,
    state: BulkState | None,
    limit: int,
    cursor: str | None,
) -> BulkPage:
    """Newest first: every operation for an admin, its tenant's for any other key."""
    before = decode_position(cursor, _operation_id) if cursor else None
    with ctx.db.transaction() as session:
        operations = bulk_store.list_operations(session, _owner(principal), state, limit, before)
    items = [shape(operation) for operation in operations]
    next_cursor = encode_position(str(items[-1].id)) if len(items) == limit else None
    return BulkPage(items=items, limit=limit, next_cursor=next_cursor)


def cancel(ctx: Context, principal: Principal, operation_id: uuid.UUID) -> BulkOperationOut:
    """Stop the operation: no batch runs after this returns; the batches already run stay."""
    owner = _owner(principal)
    with ctx.db.transaction() as session:
        operation = bulk_store.cancel_operation(session, operation_id, owner)
        if operation is not None:
            target = {"operation_id": operation_id, "done": operation.done}
            audit.record(session, principal, AuditAction.BULK_CANCEL, target)
        elif bulk_store.get_operation(session, operation_id, owner) is None:
            raise BulkOperationNotFound()
        else:
            raise BulkOperationEnded()
    log.info(
        "bulk operation cancelled",
        extra={"action": "bulk_cancelled", "operation_id": str(operation_id)},
    )
    return shape(operation)


def active(ctx: Context, limit: int) -> list[uuid.UUID]:
    """The operations not ended yet, oldest first: the duty's work list."""
    with ctx.db.transaction() as session:
        return bulk_store.active_ids(session, limit)


def run_batch(ctx: Context, operation_id: uuid.UUID) -> int | None:
    """Advance one operation by one batch, in one transaction; how many jobs the batch reached,
    or None when the operation has ended (done, cancelled, or deleted)."""
    size = ctx.settings.bulk_batch_size
    with ctx.db.transaction() as session:
        # Locked until this batch commits: a cancel waits for it, and a second runner (should
        # the duty's lock ever be lost) finds the position this batch leaves.
        operation = bulk_store.lock_active(session, operation_id)
        if operation is None:
            return None
        query, position = operation.query, operation.position
        statuses = statuses_for(operation.action, query)
        ids: list[uuid.UUID] = []
        if operation.last_id is not None:
            ids = bulk_store.next_ids(session, query, statuses, position, operation.last_id, size)
        requeued: list[JobRecord] = []
        cancelled: list[JobRecord] = []
        done = 0
        if ids and operation.action is BulkAction.CANCEL:
            cancelled = bulk_store.cancel_ids(session, ids, query.tenant, statuses)
            done = len(cancelled)
        elif ids and operation.action is BulkAction.DELETE:
            done = len(bulk_store.delete_ids(session, ids, query.tenant, statuses))
        elif ids:  # retry, replay
            requeued = bulk_store.requeue_ids(session, ids, query.tenant, statuses)
            done = len(requeued)
        # The walk ends at the largest id that matched at the start.
        finished = len(ids) < size or ids[-1] == operation.last_id
        bulk_store.advance(
            session,
            operation.id,
            ids[-1] if ids else position,
            done=done,
            skipped=len(ids) - done,
            finished=finished,
        )
    # Requeued ids go to Redis only now that their rows are committed (a failed push is
    # repaired by the reconciler); cancelled ids left in Redis are dropped by the claim.
    announce_after_commit(ctx, requeued)
    counter = metrics().jobs_cancelled
    for queue, count in Counter(job.queue for job in cancelled).items():
        counter.labels(ctx.metric_labels.queue(queue)).inc(count)
    with log_context(request_id=operation.request_id):
        log.info(
            "bulk batch",
            extra={
                "action": "bulk_done" if finished else "bulk_batch",
                "operation_id": str(operation.id),
                "reached": len(ids),
                "changed": done,
            },
        )
    return len(ids)
