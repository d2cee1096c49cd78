"""What the overview and the "why is it waiting" answer read: per-minute counts of finished
jobs (job_stats, kept by the stats duty), counts of the jobs still in play, the oldest waiting
job, and the queue in front of one job. Each reads an index bounded by live work or by
minutes, never the whole history of finished jobs."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import text
from sqlalchemy.orm import Session

from app.domain.records import JobRecord
from app.domain.states import JobStatus
from app.store.maintenance import READY_LISTS_CTE
from app.store.scans import plain_index_scans

MARK = "job_stats"
# Finishes commit moments after Postgres stamps their finished_at; a round recounts the minutes
# this far back so that none committed late is missed (and clocks a little apart agree).
LOOKBACK = timedelta(minutes=2)
# After a pause of the duty, a round catches up this far back at most: what the overview shows.
CATCH_UP = timedelta(hours=1)
# Counted one by one from their partial indexes: the jobs in play, and the dead-letter queue.
LIVE = (JobStatus.QUEUED, JobStatus.SCHEDULED, JobStatus.PROCESSING, JobStatus.FAILED)


def _minute(at: datetime) -> datetime:
    return at.replace(second=0, microsecond=0)


def counted_through(session: Session) -> datetime | None:
    through: datetime | None = session.scalar(
        text("SELECT through FROM stats_marks WHERE name = :name"), {"name": MARK}
    )
    return through


def roll_up(session: Session, now: datetime) -> int:
    """Recount the minutes from where the last round stopped (less LOOKBACK, at most CATCH_UP
    ago) up to `now`, from the finished_at of completed and failed jobs; returns how many jobs
    were counted. A minute's rows are replaced whole, so a round run twice changes nothing."""
    through = counted_through(session)
    since = now - CATCH_UP if through is None else min(through, now) - LOOKBACK
    since = _minute(max(since, now - CATCH_UP))
    window = {"since": since, "until": now}
    session.execute(
        text("DELETE FROM job_stats WHERE minute >= :since AND minute < :until"), window
    )
    counted = session.scalar(
        text(
            """
            WITH counted AS (
                INSERT INTO job_stats (minute, queue, tenant, completed, failed)
                SELECT date_trunc('minute', finished_at), queue, tenant,
                       count(*) FILTER (WHERE status = 'completed'),
                       count(*) FILTER (WHERE status = 'failed')
                  FROM jobs
                 WHERE status IN ('completed', 'failed')
                   AND finished_at >= :since AND finished_at < :until
                 GROUP BY 1, 2, 3
                ON CONFLICT (minute, queue, tenant) DO UPDATE
                   SET completed = excluded.completed, failed = excluded.failed
                RETURNING completed + failed AS jobs
            )
            SELECT coalesce(sum(jobs), 0) FROM counted
            """
        ),
        window,
    )
    session.execute(
        text(
            "INSERT INTO stats_marks (name, through) VALUES (:name, :until) "
            "ON CONFLICT (name) DO UPDATE SET through = excluded.through"
        ),
        {"name": MARK, "until": now},
    )
    return int(counted or 0)


def finished_since(
    session: Session, since: datetime, tenant: str | None
) -> dict[str, tuple[int, int]]:
    """(completed, failed) per queue in the minutes from `since` on: of every tenant, or of
    `tenant`."""
    rows = session.execute(
        text(
            """
            SELECT queue, sum(completed) AS completed, sum(failed) AS failed
              FROM job_stats
             WHERE minute >= :since AND (CAST(:tenant AS text) IS NULL OR tenant = :tenant)
             GROUP BY queue
            """
        ),
        {"since": _minute(since), "tenant": tenant},
    ).all()
    return {r.queue: (int(r.completed), int(r.failed)) for r in rows}


def delete_old(session: Session, older_than_seconds: float, limit: int) -> int:
    """Delete up to `limit` minutes' rows older than that, oldest first."""
    result = session.execute(
        text(
            """
            DELETE FROM job_stats WHERE (minute, queue, tenant) IN (
                SELECT minute, queue, tenant FROM job_stats
                 WHERE minute < now() - make_interval(secs => :age)
                 ORDER BY minute LIMIT :limit
            )
            RETURNING minute
            """
        ),
        {"age": older_than_seconds, "limit": limit},
    )
    return len(result.all())


def live_counts(session: Session, tenant: str | None) -> dict[str, dict[str, int]]:
    """Jobs per queue and status for the statuses in LIVE, of every tenant or of `tenant`.
    One query per status, so each reads the partial index of its status."""
    counts: dict[str, dict[str, int]] = {}
    with plain_index_scans(session):
        for status in LIVE:
            rows = session.execute(
                text(
                    "SELECT queue, count(*) AS n FROM jobs WHERE status = :status "
                    "AND (CAST(:tenant AS text) IS NULL OR tenant = :tenant) GROUP BY queue"
                ),
                {"status": status.value, "tenant": tenant},
            ).all()
            for row in rows:
                counts.setdefault(row.queue, {})[status.value] = int(row.n)
    return counts


def oldest_queued_of_tenant(session: Session, tenant: str) -> dict[str, datetime]:
    """The ready-since time of the oldest queued job of `tenant` in each queue: one index
    probe per ready list."""
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
              FROM l WHERE l.tenant = :tenant GROUP BY l.queue
            """
        ),
        {"tenant": tenant},
    ).all()
    return {r.queue: r.oldest for r in rows}


def jobs_ahead(session: Session, job: JobRecord, tenant: str | None, cap: int) -> int:
    """Queued jobs of the job's queue that go before it: a higher priority, or the same one
    and ready earlier. Of every tenant, or of `tenant`; counted up to `cap` + 1."""
    count = session.scalar(
        text(
            """
            SELECT count(*) FROM (
                SELECT 1 FROM jobs
                 WHERE status = 'queued' AND queue = :queue
                   AND (CAST(:tenant AS text) IS NULL OR tenant = :tenant)
                   AND (priority > :priority
                        OR (priority = :priority AND (run_at, id) < (:run_at, :id)))
                 LIMIT :cap
            ) ahead
            """
        ),
        {
            "queue": job.queue,
            "tenant": tenant,
            "priority": job.priority,
            "run_at": job.run_at,
            "id": job.id,
            "cap": cap + 1,
        },
    )
    return int(count or 0)
