"""Job searches: filters, containment in payloads, substrings of errors, newest first with a
keyset cursor, and how many match.

Which plan a page takes is decided by a bounded count, not by the planner's guess. A page
ordered newest first with a LIMIT invites Postgres to walk an index in that order and filter
as it goes, which is fastest when matches are common and reads the whole table when they are
rare, or when two filters that look independent never hold together (a payload of one queue's
jobs searched in another queue). So every search first counts its matches up to TOTAL_CAP
(that count is also the reply's `total`). When they are that few, the page is taken from all
of them, gathered through whichever indexes serve the filters and then sorted: at most
TOTAL_CAP rows, whatever their order. When there are more, matches are dense enough that the
ordered walk finds a page quickly (at 1,000,000 jobs, one row in a hundred or more).
"""

from __future__ import annotations

import dataclasses
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, func, literal, or_, select, tuple_
from sqlalchemy.orm import Session

from app.domain.filters import TOTAL_CAP, JobFilter, JobQuery
from app.domain.records import DeadLetterGroup, JobMatches
from app.domain.states import JobStatus
from app.store.jobs import JOB_SELECTION, job_record
from app.store.models import Job

_NEWEST_FIRST = (Job.created_at.desc(), Job.id.desc())
# Characters of a dead-letter group's error that a listing shows (the group is by all of it).
GROUP_ERROR_SHOWN = 2000


def like_pattern(text: str) -> str:
    """An ILIKE pattern matching `text` anywhere, its own wildcards taken literally."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def conditions(query: JobFilter) -> list[ColumnElement[bool]]:
    """The WHERE terms of a filter or a search (an empty list matches every job)."""
    terms: list[ColumnElement[bool]] = []
    if query.tenant is not None:
        terms.append(Job.tenant == query.tenant)
    if query.status is not None:
        terms.append(Job.status == query.status.value)
    if query.queue is not None:
        terms.append(Job.queue == query.queue)
    if query.task is not None:
        terms.append(Job.task == query.task)
    if not isinstance(query, JobQuery):
        return terms
    if query.created_after is not None:
        terms.append(Job.created_at >= query.created_after)
    if query.created_before is not None:
        terms.append(Job.created_at < query.created_before)
    if query.job_id is not None:
        terms.append(Job.id == query.job_id)
    if query.idempotency_key is not None:
        terms.append(Job.idempotency_key == query.idempotency_key)
    if query.payload_contains is not None:
        terms.append(Job.payload.contains(query.payload_contains))
    if query.error_contains is not None:
        # The default escape character of LIKE is the backslash: no ESCAPE clause, so that
        # the trigram index sees a constant pattern.
        terms.append(Job.last_error.ilike(like_pattern(query.error_contains)))
    if query.id_or_key is not None:
        terms.append(_id_or_key(query.id_or_key))
    if query.error_digest is not None:
        terms.append(_error_digest() == query.error_digest)
    return terms


def _error_digest() -> ColumnElement[str]:
    """The key of a job's dead-letter group, as app.domain.filters.error_digest computes it."""
    return func.md5(func.coalesce(Job.last_error, ""))


def _id_or_key(text: str) -> ColumnElement[bool]:
    """The job of this id, or the jobs of this idempotency key: each side an indexed
    equality, so Postgres answers with a bitmap OR of the two."""
    by_key = Job.idempotency_key == text
    try:
        job_id = uuid.UUID(text)
    except ValueError:
        return by_key
    return or_(Job.id == job_id, by_key)


def _after(position: tuple[datetime, uuid.UUID] | None) -> list[ColumnElement[bool]]:
    """Strictly after the last job of the previous page, newest first: a row comparison,
    which an index on (..., created_at, id) serves as the start of its range."""
    if position is None:
        return []
    created_at, job_id = position
    return [tuple_(Job.created_at, Job.id) < tuple_(literal(created_at), literal(job_id))]


def _gather(
    session: Session,
    query: JobFilter,
    limit: int,
    offset: int,
    after: tuple[datetime, uuid.UUID] | None,
) -> tuple[int, list[uuid.UUID]]:
    """Up to TOTAL_CAP + 1 matches, through whichever indexes serve the filters, in no order;
    their number, and the ids of the page among them (meaningful only when they are all)."""
    matches = (
        select(Job.id, Job.created_at)
        .where(*conditions(query))
        .limit(TOTAL_CAP + 1)
        .cte("matches")
        .prefix_with("MATERIALIZED")  # gathered once, and never walked in the page's order
    )
    position: list[ColumnElement[bool]] = []
    if after is not None:
        position = [tuple_(matches.c.created_at, matches.c.id) < tuple_(*map(literal, after))]
    page = (
        select(matches.c.id)
        .where(*position)
        .order_by(matches.c.created_at.desc(), matches.c.id.desc())
        .limit(limit)
        .offset(offset)
        .subquery()
    )
    counted, ids = session.execute(
        select(
            select(func.count()).select_from(matches).scalar_subquery(),
            select(func.array_agg(page.c.id)).scalar_subquery(),
        )
    ).one()
    return int(counted), list(ids or [])


def search_jobs(
    session: Session,
    query: JobFilter,
    limit: int,
    offset: int = 0,
    after: tuple[datetime, uuid.UUID] | None = None,
) -> JobMatches:
    """A page of matching jobs, newest first (by created_at, then id), after `after` when
    given, and the count of all matches (capped at TOTAL_CAP)."""
    counted, ids = _gather(session, query, limit, offset, after)
    statement: Any
    if counted <= TOTAL_CAP:
        if not ids:
            return JobMatches([], counted, True)
        statement = select(*JOB_SELECTION).where(Job.id.in_(ids))
    else:
        statement = select(*JOB_SELECTION).where(*conditions(query), *_after(after))
        statement = statement.limit(limit).offset(offset)
    rows = session.execute(statement.order_by(*_NEWEST_FIRST))
    jobs = [job_record(row) for row in rows]
    return JobMatches(jobs, min(counted, TOTAL_CAP), counted <= TOTAL_CAP)


def dead_letter_groups(session: Session, query: JobQuery, limit: int) -> list[DeadLetterGroup]:
    """The failed jobs that match, grouped by task and exact last error, the largest groups
    first: up to `limit` groups, each with its count and its latest failure. The query's own
    status is ignored: a dead letter is a failed job."""
    where = conditions(dataclasses.replace(query, status=JobStatus.FAILED))
    jobs = func.count().label("jobs")
    digest = _error_digest()
    rows = session.execute(
        select(
            Job.task,
            func.left(Job.last_error, GROUP_ERROR_SHOWN),
            digest,
            jobs,
            func.max(Job.finished_at),
        )
        .where(*where)
        .group_by(Job.task, Job.last_error)
        .order_by(jobs.desc(), Job.task, digest)
        .limit(limit)
    )
    return [
        DeadLetterGroup(task, error, digest, int(count), latest)
        for task, error, digest, count, latest in rows
    ]
