"""Which jobs a listing asks for. Pure data: the store turns it into a query."""

from __future__ import annotations

from dataclasses import dataclass

from app.domain.states import JobStatus


@dataclass(frozen=True)
class JobFilter:
    tenant: str | None  # None: every tenant (admin)
    status: JobStatus | None = None
    queue: str | None = None
    task: str | None = None
