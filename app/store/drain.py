"""The question a burst run asks before it ends: which of its queues still have work."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy import text

from app.store.scans import plain_index_scans

if TYPE_CHECKING:
    from app.store.engine import Executor

# One probe per kind of work, so that each is served by its partial index (queued by queue,
# processing by lease token, scheduled by run_at) and stops at the first row it finds.
_QUEUES_WITH_WORK = text(
    """
    SELECT q FROM unnest(CAST(:queues AS text[])) AS q
     WHERE EXISTS (SELECT 1 FROM jobs WHERE queue = q AND status = 'queued')
        OR EXISTS (SELECT 1 FROM jobs WHERE queue = q AND status = 'processing')
        OR EXISTS (SELECT 1 FROM jobs
                    WHERE queue = q AND status = 'scheduled'
                      AND (run_at <= now() OR attempts > 0))
    """
)


def queues_with_work(session: Executor, queues: list[str]) -> list[str]:
    """The queues among `queues` holding a job that is queued, running, due (scheduled with
    its run_at passed) or waiting out the backoff of a retry (scheduled after an attempt)."""
    if not queues:
        return []
    with plain_index_scans(session):
        rows = session.execute(_QUEUES_WITH_WORK, {"queues": queues}).scalars().all()
    return [str(q) for q in rows]
