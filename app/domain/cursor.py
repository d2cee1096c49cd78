"""Opaque list cursors: the position (created_at, id) of the last job a page returned, or the
one key of a list ordered by it."""

from __future__ import annotations

import base64
import binascii
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TypeVar

from app.domain.errors import InvalidRequest

T = TypeVar("T")


def encode_cursor(created_at: datetime, job_id: uuid.UUID) -> str:
    raw = f"{created_at.isoformat()}|{job_id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        created_at, job_id = raw.split("|")
        position = datetime.fromisoformat(created_at)
        if position.tzinfo is None:
            raise ValueError("no UTC offset")
        # In UTC: Postgres refuses the offsets beyond 15:59 that Python accepts.
        return position.astimezone(UTC), uuid.UUID(job_id)
    except (ValueError, binascii.Error, OverflowError):
        raise InvalidRequest(
            "cursor is not valid: pass back the next_cursor of a previous page",
            errors=[
                {
                    "loc": ["query", "cursor"],
                    "msg": "invalid cursor",
                    "type": "value_error",
                }
            ],
        ) from None


def encode_position(position: str) -> str:
    """An opaque cursor for a list ordered by one key (an audit event's id, an operation's)."""
    return base64.urlsafe_b64encode(position.encode()).decode().rstrip("=")


def decode_position(cursor: str, parse: Callable[[str], T]) -> T:
    """The key a cursor of `encode_position` holds, read by `parse`; a 422 for anything else."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        return parse(raw)
    except (ValueError, binascii.Error, OverflowError):
        raise InvalidRequest(
            "cursor is not valid: pass back the next_cursor of a previous page",
            errors=[{"loc": ["query", "cursor"], "msg": "invalid cursor", "type": "value_error"}],
        ) from None
