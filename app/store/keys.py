"""API key rows. Only the HMAC of a key is stored; the plain key exists once, at creation."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from sqlalchemy import func, select, text, update
from sqlalchemy.orm import Session

from app.store.models import ApiKey

# Writing last_used_at on every request would turn each read into a write; once a minute is
# enough to tell an operator which keys are alive.
LAST_USED_RESOLUTION = text("interval '1 minute'")


def insert_key(
    session: Session, tenant: str, name: str, key_hash: str, scopes: list[str]
) -> ApiKey:
    row = ApiKey(tenant=tenant, name=name, key_hash=key_hash, scopes=scopes)
    session.add(row)
    session.flush()
    session.refresh(row)
    return row


def find_active_by_hash(session: Session, key_hash: str) -> ApiKey | None:
    return session.scalars(
        select(ApiKey).where(ApiKey.key_hash == key_hash, ApiKey.revoked_at.is_(None))
    ).one_or_none()


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


def list_keys(session: Session, tenant: str | None, include_revoked: bool) -> Sequence[ApiKey]:
    statement = select(ApiKey).order_by(ApiKey.created_at)
    if tenant is not None:
        statement = statement.where(ApiKey.tenant == tenant)
    if not include_revoked:
        statement = statement.where(ApiKey.revoked_at.is_(None))
    return session.scalars(statement).all()


def revoke(session: Session, key_id: uuid.UUID) -> bool:
    result = session.execute(
        update(ApiKey)
        .where(ApiKey.id == key_id, ApiKey.revoked_at.is_(None))
        .values(revoked_at=func.now())
        .returning(ApiKey.id)
    )
    return result.first() is not None
