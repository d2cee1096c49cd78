"""Query values as the dashboard's GET forms send them: a field left empty arrives as `name=`,
and means "no filter", not an invalid value."""

from __future__ import annotations

from typing import Annotated

from pydantic import BeforeValidator

from app.domain.filters import TenantName


def blank_is_none(value: object) -> object:
    return None if isinstance(value, str) and not value.strip() else value


Blankable = BeforeValidator(blank_is_none)
TenantFilter = Annotated[TenantName | None, Blankable]
