"""Who is calling: a tenant's API key and its scopes. Pure data."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from enum import StrEnum

from app.domain.errors import Forbidden


class Scope(StrEnum):
    PRODUCER = "producer"
    WORKER = "worker"
    ADMIN = "admin"
    METRICS = "metrics"  # reads /metrics, nothing else


@dataclass(frozen=True)
class Principal:
    key_id: uuid.UUID
    tenant: str
    scopes: frozenset[Scope]

    @property
    def is_admin(self) -> bool:
        return Scope.ADMIN in self.scopes

    @property
    def tenant_filter(self) -> str | None:
        """The tenant whose jobs this key may see; None means all of them (admin)."""
        return None if self.is_admin else self.tenant

    def require(self, scope: Scope) -> None:
        # Admin may do anything a producer, worker or metrics key may.
        if scope not in self.scopes and not self.is_admin:
            raise Forbidden(f"this action needs an API key with the '{scope}' scope")
