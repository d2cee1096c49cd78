"""The paging query parameters of the job listings: limit, offset and cursor."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Query

from app.domain.schemas import MAX_OFFSET, Cursor


@dataclass(frozen=True)
class PageRequest:
    limit: int
    offset: int
    cursor: str | None


def _page(
    limit: Annotated[int, Query(ge=1, le=100, description="Jobs per page")] = 20,
    offset: Annotated[
        int,
        Query(
            ge=0,
            le=MAX_OFFSET,
            description=f"Jobs to skip (at most {MAX_OFFSET}; deeper pages use the cursor)",
        ),
    ] = 0,
    cursor: Annotated[
        Cursor | None,
        Query(
            description=(
                "The `next_cursor` of the previous page, with the same filters: the page "
                "continues after its last job. Opaque; anything else is a 422."
            ),
        ),
    ] = None,
) -> PageRequest:
    return PageRequest(limit, offset, cursor)


Page = Annotated[PageRequest, Depends(_page)]
