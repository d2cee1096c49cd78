"""Which jobs a listing or a search asks for. Pure data: the store turns it into a query."""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Annotated, Any

from pydantic import AfterValidator, Field
from pydantic_core import PydanticCustomError

from app.domain.states import JobStatus
from app.domain.values import MAX_JSON_DEPTH, StoredText, json_problem

# A search counts its matches exactly up to here; beyond, its total says "at least this many".
TOTAL_CAP = 10_000
# Bounds of the search terms a query string may carry.
MAX_PAYLOAD_FILTER = 2000  # characters of JSON text
MAX_ERROR_FILTER = 200
# A trigram index serves substrings of three characters or more; a shorter one would read
# every failed job's error.
MIN_ERROR_FILTER = 3

JsonContainer = dict[str, Any] | list[Any]


@dataclass(frozen=True)
class JobFilter:
    tenant: str | None  # None: every tenant (admin)
    status: JobStatus | None = None
    queue: str | None = None
    task: str | None = None


@dataclass(frozen=True)
class JobQuery(JobFilter):
    """A search: the filters of a listing, plus a creation window, exact ids and keys, and
    searches inside payloads and error text. Every given field narrows the result."""

    created_after: datetime | None = None  # created at or after (UTC)
    created_before: datetime | None = None  # created strictly before (UTC)
    job_id: uuid.UUID | None = None
    idempotency_key: str | None = None
    payload_contains: JsonContainer | None = None  # JSONB containment: payload @> this
    error_contains: str | None = None  # a substring of last_error, case-insensitive
    # What a person types in one search box: the job of this id, or the jobs submitted with
    # this idempotency key (keys are often UUIDs themselves, so a UUID is tried as both).
    id_or_key: str | None = None
    # One dead-letter group: jobs whose last_error is exactly the one of this digest
    # (`error_digest`), however long or multi-line that error is.
    error_digest: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The query as a JSON object (the fields that are set), e.g. to store it."""
        shown: dict[str, Any] = {}
        for field in fields(self):
            value = getattr(self, field.name)
            if value is None:
                continue
            if isinstance(value, datetime):
                value = value.isoformat()
            elif isinstance(value, uuid.UUID | JobStatus):
                value = str(value)
            shown[field.name] = value
        return shown

    @classmethod
    def from_json(cls, document: dict[str, Any]) -> JobQuery:
        """The inverse of `to_json`."""
        values = dict(document)
        values.setdefault("tenant", None)
        for name in ("created_after", "created_before"):
            if values.get(name) is not None:
                values[name] = datetime.fromisoformat(values[name])
        if values.get("job_id") is not None:
            values["job_id"] = uuid.UUID(values["job_id"])
        if values.get("status") is not None:
            values["status"] = JobStatus(values["status"])
        return cls(**values)


def error_digest(error: str | None) -> str:
    """The key of a dead-letter group: the MD5 of the last error's UTF-8 text (no error: of
    the empty text), in hex, as Postgres' md5() computes it. A digest, not the text, so that a
    form or a link can name a group whatever its error holds."""
    return hashlib.md5((error or "").encode(), usedforsecurity=False).hexdigest()


def parse_containment(text: str) -> JsonContainer:
    """A payload search from its JSON text: an object or an array with something in it, that
    Postgres can hold. Raises a validation error that says what is wrong."""
    try:
        # The standard parser, not orjson: it keeps integers of any size and non-finite
        # numbers as they are written, for json_problem to name.
        document = json.loads(text)
    except ValueError as exc:
        raise PydanticCustomError(
            "json_invalid", "not valid JSON: {error}", {"error": str(exc)}
        ) from None
    except RecursionError:
        raise PydanticCustomError(
            "json_too_deep", f"nested deeper than {MAX_JSON_DEPTH} levels"
        ) from None
    if not isinstance(document, dict | list):
        raise PydanticCustomError(
            "json_container", 'a JSON object or array is needed, such as {"order": 1001}'
        )
    if not document:
        # {} and [] are contained in every object and array: a search that narrows nothing.
        raise PydanticCustomError("json_empty", "an empty object or array matches every job")
    problem = json_problem(document)
    if problem is not None:
        raise problem
    return document


def _containment_text(text: str) -> str:
    parse_containment(text)
    return text


# Query-string forms of the search terms, checked where they arrive.
PayloadFilter = Annotated[
    StoredText,
    Field(
        min_length=2,
        max_length=MAX_PAYLOAD_FILTER,
        description=(
            'JSON text of an object or array the payload must contain (`{"order": 1001}`; '
            "JSONB containment, `@>`)"
        ),
    ),
    AfterValidator(_containment_text),
]
ErrorFilter = Annotated[
    StoredText,
    Field(
        min_length=MIN_ERROR_FILTER,
        max_length=MAX_ERROR_FILTER,
        description="Text the last error contains, in any case",
    ),
]
TenantName = Annotated[StoredText, Field(min_length=1, max_length=128)]
