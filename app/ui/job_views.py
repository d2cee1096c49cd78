"""How the job pages show values: durations, JSON documents, short errors, the attempt
timeline, and which buttons a job offers. Presentation only: what a button does is the
services' business."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from app.domain.schemas import JobDetail, JobOut
from app.domain.states import CANCEL_REQUESTABLE, CANCELLABLE, DELETABLE, RETRYABLE

# Characters of an error a table cell shows; the job's page shows all of it.
SHORT_ERROR = 160


def duration(start: datetime | None, end: datetime | None) -> str:
    if start is None or end is None:
        return "—"
    seconds = (end - start).total_seconds()
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 120:
        return f"{seconds:.1f} s"
    return f"{seconds / 60:.1f} min"


def pretty(document: Any) -> str:
    """A JSON document, indented, non-ASCII shown as itself."""
    return json.dumps(document, indent=2, ensure_ascii=False, sort_keys=False)


def short(text: str | None, limit: int = SHORT_ERROR) -> str:
    if not text:
        return ""
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


@dataclass(frozen=True)
class Actions:
    """The buttons a job's page offers: those its status allows now."""

    cancel: bool
    retry: bool
    delete: bool


def actions(job: JobOut) -> Actions:
    """From the one state table: a waiting job is cancelled at once, a running one asked to
    stop (once); failed and cancelled jobs go back to the queue; any job no worker holds may
    be deleted."""
    cancel = job.status in CANCELLABLE or (
        job.status in CANCEL_REQUESTABLE and not job.cancel_requested
    )
    return Actions(cancel=cancel, retry=job.status in RETRYABLE, delete=job.status in DELETABLE)


@dataclass(frozen=True)
class TimelineRow:
    """One attempt of a job's timeline; `number` is its place in the whole timeline (a
    replayed job starts counting its attempts again, the timeline does not)."""

    number: int
    attempt: int
    worker: str
    started: datetime | None
    finished: datetime | None
    outcome: str
    error: str


def timeline(job: JobDetail) -> list[TimelineRow]:
    """Every finished attempt in order, then the one running now, if any."""
    rows = [
        TimelineRow(
            number=position,
            attempt=item.attempt,
            worker=item.worker_id or "—",
            started=item.started_at,
            finished=item.finished_at,
            outcome=item.outcome.value if item.outcome else "—",
            error=item.error or "",
        )
        for position, item in enumerate(job.history, start=1)
    ]
    if job.status in CANCEL_REQUESTABLE:  # processing: its attempt is not in the history yet
        rows.append(
            TimelineRow(
                number=len(rows) + 1,
                attempt=job.attempts,
                worker=job.worker_id or "—",
                started=job.started_at,
                finished=None,
                outcome="running",
                error="",
            )
        )
    return rows
