"""Finding jobs: the filters of a listing, a creation window, an id or an idempotency key,
containment in payloads and substrings of errors, newest first with a keyset cursor. GET /jobs,
GET /dlq and the dashboard all search through here, so they agree on what matches."""

from __future__ import annotations

import dataclasses

from app.domain.cursor import decode_cursor, encode_cursor
from app.domain.errors import Forbidden
from app.domain.filters import JobQuery
from app.domain.schemas import JobOut, JobPage
from app.services.auth import Principal
from app.services.context import Context
from app.store import search as search_store


def scoped(principal: Principal, query: JobQuery) -> JobQuery:
    """The query as this key may run it: a producer's is always its own tenant's; an admin's
    covers every tenant unless it names one."""
    if principal.is_admin:
        return query
    if query.tenant not in (None, principal.tenant):
        raise Forbidden("only an admin key may search another tenant's jobs")
    return dataclasses.replace(query, tenant=principal.tenant)


def search(
    ctx: Context,
    principal: Principal,
    query: JobQuery,
    limit: int,
    after_cursor: str | None = None,
    offset: int = 0,
) -> JobPage:
    """A page of the jobs that match, newest first. `total` counts every match up to 10,000;
    `total_exact` is False when more match. `next_cursor` is set when the page is full."""
    after = decode_cursor(after_cursor) if after_cursor else None
    with ctx.db.transaction() as session:
        found = search_store.search_jobs(session, scoped(principal, query), limit, offset, after)
    items = [JobOut.model_validate(job) for job in found.jobs]
    last = items[-1] if len(items) == limit else None
    return JobPage(
        items=items,
        total=found.total,
        total_exact=found.total_exact,
        limit=limit,
        offset=offset,
        next_cursor=encode_cursor(last.created_at, last.id) if last else None,
    )
