"""API key rows. Only the HMAC of a key is stored; the plain key exists once, at creation."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import Row, func, insert, select, text, update
from sqlalchemy.orm import Session

from app.domain.records import KeyRecord
from app.store.models import ApiKey

# Writing last_used_at on every request would turn each read into a write; once a minute is
# enough to tell an operator which keys are alive.
LAST_USED_RESOLUTION = text("interval '1 minute'")

_KEY = (
    ApiKey.id,
    ApiKey.tenant,
    ApiKey.name,
    ApiKey.key_hash,
    ApiKey.scopes,
    ApiKey.created_at,
    ApiKey.last_used_at,
    ApiKey.revoked_at,
)


def _key(row: Row[Any]) -> KeyRecord:
    (key_id, tenant, name, key_hash, scopes, created_at, last_used_at, revoked_at) = row
    return KeyRecord(
        key_id, tenant, name, key_hash, tuple(scopes), created_at, last_used_at, revoked_at
    )


def insert_key(
    session: Session, tenant: str, name: str, key_hash: str, scopes: list[str]
) -> KeyRecord:
    row = session.execute(
        insert(ApiKey)
        .values(tenant=tenant, name=name, key_hash=key_hash, scopes=scopes)
        .returning(*_KEY)
    ).one()
    return _key(row)


def find_active_by_hash(session: Session, key_hash: str) -> KeyRecord | None:
    row = session.execute(
        select(*_KEY).where(ApiKey.key_hash == key_hash, ApiKey.revoked_at.is_(None))
    ).one_or_none()
    return None if row is None else _key(row)


def touch(session: Session, key_id: uuid.UUID) -> None:
    session.execute(
        update(ApiKey)
        .where(
            ApiKey.id == key_id,
            (ApiKey.last_used_at.is_(None))
            | (ApiKey.last_used_at < func.now() - LAST_USED_RESOLUTION),
        )
        .values(last_used_at=func.now())
    )


def list_keys(session: Session, tenant: str | None, include_revoked: bool) -> list[KeyRecord]:
    statement = select(*_KEY).order_by(ApiKey.created_at)
    if tenant is not None:
        statement = statement.where(ApiKey.tenant == tenant)
    if not include_revoked:
        statement = statement.where(ApiKey.revoked_at.is_(None))
    return [_key(row) for row in session.execute(statement)]


def revoke(session: Session, key_id: uuid.UUID) -> bool:
    result = session.execute(
        update(ApiKey)
        .where(ApiKey.id == key_id, ApiKey.revoked_at.is_(None))
        .values(revoked_at=func.now())
        .returning(ApiKey.id)
    )
    return result.first() is not None
