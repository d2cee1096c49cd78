"""The job filters of the dashboard's URLs and forms: read from text as a person typed it,
checked with the API's own types, and turned into the job search's `JobQuery`.

Every page that lists or acts on jobs (the job list, the dead-letter queue, bulk operations)
reads its filters here, so a filter means the same on each and a link or a hidden form field
carries it from one to the next unchanged.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Annotated, Any
from urllib.parse import urlencode, urlsplit

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError
from pydantic_core import PydanticCustomError

from app.domain.filters import (
    ErrorFilter,
    JobQuery,
    PayloadFilter,
    TenantName,
    parse_containment,
)
from app.domain.schemas import IdempotencyKey, QueueName, TaskName
from app.domain.states import JobStatus
from app.domain.values import UtcDatetime
from app.ui.params import blank_or_utc

# Every filter a URL may carry, in the order the forms show them.
FIELDS = (
    "status",
    "queue",
    "task",
    "tenant",
    "created_after",
    "created_before",
    "q",
    "payload",
    "error",
    "group",
)
LABELS = {
    "status": "Status",
    "queue": "Queue",
    "task": "Task",
    "tenant": "Tenant",
    "created_after": "Created after",
    "created_before": "Created before",
    "q": "Id or idempotency key",
    "payload": "Payload contains",
    "error": "Error contains",
    "group": "Dead-letter group",
}
# The dead-letter queue's filters: its jobs are all failed, so no status.
DLQ_FIELDS = ("queue", "task", "tenant", "payload", "error", "group")
# The longest "back to" path a form may carry: a page's URL with its filters.
MAX_BACK = 4000


def _as_utc(value: Any) -> Any:
    """A time as a person types it (app.ui.params: UTC unless it names an offset; a date
    alone is its midnight), refused in words that say what to type instead."""
    value = blank_or_utc(value)
    if isinstance(value, str):
        try:
            datetime.fromisoformat(value)
        except ValueError:
            raise PydanticCustomError(
                "datetime_invalid",
                "not a date and time: use ISO 8601, such as 2026-03-01T12:00 (UTC) "
                "or 2026-03-01T12:00+02:00",
            ) from None
    return value


TypedTime = Annotated[UtcDatetime, BeforeValidator(_as_utc)]
# A dead-letter group's key: app.domain.filters.error_digest, 32 hex digits.
Digest = Annotated[str, Field(pattern=r"^[0-9a-f]{32}$")]


class _Fields(BaseModel):
    """The filters, each checked as the API checks the same field."""

    model_config = ConfigDict(extra="ignore")

    status: JobStatus | None = None
    queue: QueueName | None = None
    task: TaskName | None = None
    tenant: TenantName | None = None
    created_after: TypedTime | None = None
    created_before: TypedTime | None = None
    q: IdempotencyKey | None = None
    payload: PayloadFilter | None = None
    error: ErrorFilter | None = None
    group: Digest | None = None


@dataclass(frozen=True)
class Problem:
    """A filter that could not be read, and why, in words for the page."""

    field: str
    message: str

    @property
    def text(self) -> str:
        return f"{LABELS.get(self.field, self.field)}: {self.message}"


@dataclass(frozen=True)
class Filters:
    """The filters of a request: as given (to show them again and to carry them on), and as
    a query when every one of them is valid."""

    given: dict[str, str]  # non-empty fields as typed (trimmed), in FIELDS order
    query: JobQuery | None  # None when `problems` holds something
    problems: list[Problem] = field(default_factory=list)

    def params(self, **more: str | None) -> str:
        """The filters (and `more`, where not None) as a query string, without the '?'."""
        pairs = {**self.given, **{k: v for k, v in more.items() if v is not None}}
        return urlencode(pairs)

    def hidden(self, *skip: str) -> list[tuple[str, str]]:
        """(name, value) of the filters a form carries on as hidden inputs."""
        return [(name, value) for name, value in self.given.items() if name not in skip]


def read(source: Mapping[str, str], fields: Iterable[str] = FIELDS) -> Filters:
    """The filters named in `fields` from a query string or a form; anything else is left."""
    given = {}
    for name in fields:
        value = str(source.get(name) or "").strip()
        if value:
            given[name] = value
    try:
        checked = _Fields.model_validate(given)
    except ValidationError as exc:
        problems = [
            Problem(str(error["loc"][0]) if error["loc"] else "filters", error["msg"])
            for error in exc.errors()
        ]
        return Filters(given, None, problems)
    return Filters(given, _query(checked))


def _query(checked: _Fields) -> JobQuery:
    return JobQuery(
        tenant=checked.tenant,
        status=checked.status,
        queue=checked.queue,
        task=checked.task,
        created_after=checked.created_after,
        created_before=checked.created_before,
        payload_contains=None if checked.payload is None else parse_containment(checked.payload),
        error_contains=checked.error,
        id_or_key=checked.q,
        error_digest=checked.group,
    )


def form_values(form: Mapping[str, Any]) -> dict[str, str]:
    """The text fields of a posted form (the dashboard's forms upload nothing)."""
    return {name: value for name, value in form.items() if isinstance(value, str)}


def local_path(target: str | None, default: str) -> str:
    """`target` when it is a path of the dashboard (where a form says to go back to), else
    `default`: never another site, whatever a form was made to post."""
    if not target or len(target) > MAX_BACK or not target.startswith("/ui/"):
        return default
    if any(ord(char) < 0x21 or char in '\\"<>`' for char in target):
        return default
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or "/../" in parts.path + "/" or "%" in parts.path:
        return default
    return target
