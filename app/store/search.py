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

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, func, literal, select, tuple_
from sqlalchemy.orm import Session

from app.domain.filters import TOTAL_CAP, JobFilter, JobQuery
from app.domain.records import JobMatches
from app.store.jobs import JOB_SELECTION, job_record
from app.store.models import Job

_NEWEST_FIRST = (Job.created_at.desc(), Job.id.desc())


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
    return terms


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
