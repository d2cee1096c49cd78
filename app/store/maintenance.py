"""Queries of the periodic duties: promotion of due jobs, the reconciler's rebuild and sweep,
and retention. Each reads a bounded batch through an index."""

from __future__ import annotations

import uuid
from collections.abc import Collection, Iterator
from datetime import datetime

from sqlalchemy import text
from sqlalchemy.orm import Session

from app.domain.records import Ready, ReadyList
from app.domain.states import JobStatus
from app.store.scans import plain_index_scans
from app.store.transitions import PROMOTE, guarded

# SKIP LOCKED lets a second promoter (should the lock ever be lost) take other rows instead
# of waiting. A plain index scan (app/store/scans.py), four times a second, marks the entries of
# promoted jobs, so that the retries scheduled next reclaim them.
_PROMOTE = guarded(
    PROMOTE,
    """
    WITH due AS (
        SELECT id FROM jobs
         WHERE status = 'scheduled' AND run_at <= now()
         ORDER BY run_at LIMIT :limit
           FOR UPDATE SKIP LOCKED
    )
    UPDATE jobs SET status = 'queued', updated_at = now()
     WHERE id IN (SELECT id FROM due) AND status = 'scheduled'
    RETURNING id, queue, priority, tenant, run_at
    """,
)


def promote_due(session: Session, limit: int) -> list[Ready]:
    """scheduled -> queued for jobs whose run_at has come, oldest first."""
    with plain_index_scans(session):
        rows = session.execute(_PROMOTE, {"limit": limit}).all()
    return [
        Ready(r.id, r.queue, r.priority, r.tenant) for r in sorted(rows, key=lambda r: r.run_at)
    ]


def stale_scheduled(session: Session, job_ids: list[uuid.UUID]) -> list[uuid.UUID]:
    """Of these ids from the delayed set, those no longer scheduled (cancelled, deleted, run)."""
    if not job_ids:
        return []
    live = set(
        session.scalars(
            # status || '': by primary key, never by a partial index (see store/claims.py)
            text("SELECT id FROM jobs WHERE id = ANY(:ids) AND status || '' = 'scheduled'"),
            {"ids": job_ids},
        ).all()
    )
    return [job_id for job_id in job_ids if job_id not in live]


# The distinct (queue, tenant, priority) of queued jobs, by a loose index scan: one index probe
# per list, not one row per job, so it stays cheap with millions of queued jobs. Each probe walks
# the entries of claimed jobs ahead of the list's oldest queued one until VACUUM removes them:
# it marks those it finds dead, later probes skip them without reading the table, and a submit
# into a page full of marked entries reclaims them (the reconciler lists every second for that).
READY_LISTS_CTE = """
    WITH RECURSIVE l AS (
        (SELECT queue, tenant, priority FROM jobs WHERE status = 'queued'
          ORDER BY queue, tenant, priority LIMIT 1)
        UNION ALL
        SELECT n.queue, n.tenant, n.priority
          FROM l, LATERAL (
              SELECT j.queue, j.tenant, j.priority FROM jobs j
               WHERE j.status = 'queued'
                 AND (j.queue, j.tenant, j.priority) > (l.queue, l.tenant, l.priority)
               ORDER BY j.queue, j.tenant, j.priority LIMIT 1
          ) n
    )
"""


def lists_with_queued_jobs(session: Session) -> list[ReadyList]:
    """Every (queue, tenant, priority) that has queued jobs."""
    rows = session.execute(text(READY_LISTS_CTE + "SELECT queue, tenant, priority FROM l")).all()
    return [ReadyList(r.queue, r.tenant, r.priority) for r in rows]


def oldest_queued_by_queue(session: Session) -> dict[str, datetime]:
    """The ready-since time of each queue's oldest queued job: one index probe per list."""
    rows = session.execute(
        text(
            READY_LISTS_CTE
            + """
            SELECT l.queue, min((
                SELECT j.run_at FROM jobs j
                 WHERE j.status = 'queued' AND j.queue = l.queue AND j.tenant = l.tenant
                   AND j.priority = l.priority
                 ORDER BY j.run_at LIMIT 1
            )) AS oldest
              FROM l GROUP BY l.queue
            """
        )
    ).all()
    return {r.queue: r.oldest for r in rows}


def oldest_queued_run_at(session: Session, job_ids: list[uuid.UUID]) -> datetime | None:
    if not job_ids:
        return None
    oldest: datetime | None = session.scalar(
        # status || '': by primary key, never by a partial index (see store/claims.py)
        text("SELECT min(run_at) FROM jobs WHERE id = ANY(:ids) AND status || '' = 'queued'"),
        {"ids": job_ids},
    )
    return oldest


def queued_before(
    session: Session, where: ReadyList, before: datetime, limit: int
) -> list[uuid.UUID]:
    """Queued jobs of one list that became ready before `before`, oldest first."""
    return list(
        session.scalars(
            text(
                """
                SELECT id FROM jobs
                 WHERE status = 'queued' AND queue = :queue AND tenant = :tenant
                   AND priority = :priority AND run_at < :before
                 ORDER BY run_at LIMIT :limit
                """
            ),
            {
                "queue": where.queue,
                "tenant": where.tenant,
                "priority": where.priority,
                "before": before,
                "limit": limit,
            },
        ).all()
    )


def iter_queued(session: Session, batch: int) -> Iterator[list[Ready]]:
    """Every queued job in dispatch order (per queue and tenant, priority high to low, FIFO),
    in batches, streamed through a server-side cursor."""
    result = session.execute(
        text(
            "SELECT id, queue, priority, tenant FROM jobs WHERE status = 'queued' "
            "ORDER BY queue, tenant, priority DESC, run_at"
        ).execution_options(yield_per=batch)
    )
    for rows in result.partitions(batch):
        yield [Ready(r.id, r.queue, r.priority, r.tenant) for r in rows]


def iter_scheduled(session: Session, batch: int) -> Iterator[list[tuple[uuid.UUID, datetime]]]:
    result = session.execute(
        text("SELECT id, run_at FROM jobs WHERE status = 'scheduled'").execution_options(
            yield_per=batch
        )
    )
    for rows in result.partitions(batch):
        yield [(r.id, r.run_at) for r in rows]


def delete_finished(
    session: Session, statuses: Collection[JobStatus], older_than_seconds: float, limit: int
) -> int:
    """Delete up to `limit` finished jobs (and, by cascade, their attempts) older than that."""
    result = session.execute(
        text(
            """
            WITH old AS (
                SELECT id FROM jobs
                 WHERE status = ANY(:statuses)
                   AND finished_at < now() - make_interval(secs => :age)
                 ORDER BY finished_at LIMIT :limit
            )
            DELETE FROM jobs WHERE id IN (SELECT id FROM old)
            RETURNING id
            """
        ),
        {"statuses": sorted(s.value for s in statuses), "age": older_than_seconds, "limit": limit},
    )
    return len(result.all())
