"""Query values as the dashboard's GET forms send them: a field left empty arrives as `name=`,
and means "no filter", not an invalid value."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import BeforeValidator

from app.domain.filters import TenantName
from app.domain.values import UtcDatetime


def blank_is_none(value: object) -> object:
    return None if isinstance(value, str) and not value.strip() else value


Blankable = BeforeValidator(blank_is_none)
TenantFilter = Annotated[TenantName | None, Blankable]


_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$", re.ASCII)
_LOCAL_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?$", re.ASCII)


def blank_or_utc(value: object) -> object:
    """A time as a person types it, or as <input type="datetime-local"> sends it: a date or a
    time without an offset is taken as UTC (the dashboard shows every time in UTC)."""
    value = blank_is_none(value)
    if isinstance(value, str):
        value = value.strip()
        if _DATE.match(value):
            return f"{value}T00:00:00+00:00"
        if _LOCAL_TIME.match(value):
            return f"{value}+00:00"
    return value


UtcTimeFilter = Annotated[UtcDatetime | None, BeforeValidator(blank_or_utc)]
