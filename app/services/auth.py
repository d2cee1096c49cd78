"""API keys: creation (the plain key is returned once), verification, listing, revocation."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import uuid

from app.domain.audit import AuditAction
from app.domain.errors import NotFound, Unauthorized
from app.domain.principal import Principal as Principal
from app.domain.principal import Scope as Scope
from app.domain.records import KeyRecord
from app.services import audit
from app.services.context import Context
from app.store import keys as key_store

KEY_PREFIX = "jf_"


def hash_key(secret: bytes, plain_key: str) -> str:
    return hmac.new(secret, plain_key.encode(), hashlib.sha256).hexdigest()


def create_key(
    ctx: Context, tenant: str, scopes: list[Scope], name: str = "", by: Principal | None = None
) -> tuple[KeyRecord, str]:
    """A new key and its plain text (shown once). `by`: who asks; None is the command line."""
    plain = KEY_PREFIX + secrets.token_urlsafe(32)
    with ctx.db.transaction() as session:
        row = key_store.insert_key(
            session,
            tenant,
            name,
            hash_key(ctx.settings.hashing_secret, plain),
            sorted(scopes),
        )
        target = {"key_id": row.id, "tenant": tenant, "scopes": list(row.scopes), "name": name}
        audit.record(session, by, AuditAction.KEY_CREATE, target)
    return row, plain


def cached_principal(ctx: Context, plain_key: str) -> Principal | None:
    """The caller of a key verified moments ago in this process; None means ask Postgres."""
    return ctx.principals.get(hash_key(ctx.settings.hashing_secret, plain_key.strip()))


def authenticate(ctx: Context, authorization: str | None) -> Principal:
    if not authorization:
        raise Unauthorized("missing Authorization header: send `Authorization: Bearer <key>`")
    scheme, _, plain = authorization.partition(" ")
    if scheme.lower() != "bearer" or not plain.strip():
        raise Unauthorized("the Authorization header must be `Bearer <key>`")
    return authenticate_digest(ctx, key_digest(ctx, plain))


def key_digest(ctx: Context, plain_key: str) -> str:
    """What identifies a key without being it: the digest Postgres keeps (a dashboard session
    holds this, never the key)."""
    return hash_key(ctx.settings.hashing_secret, plain_key.strip())


def authenticate_digest(ctx: Context, digest: str) -> Principal:
    """The caller of the key with this digest, verified moments ago in this process or now in
    Postgres; Unauthorized when no active key has it (revoked, or never made)."""
    cached = ctx.principals.get(digest)
    if cached is not None:
        return cached
    principal = _verify(ctx, digest)
    ctx.principals.put(digest, principal)
    return principal


def _verify(ctx: Context, digest: str) -> Principal:
    with ctx.db.transaction() as session:
        row = key_store.find_active_by_hash(session, digest)
        # The index lookup already matched the digest; the constant-time comparison makes sure
        # no timing difference depends on how much of a guessed key was right.
        if row is None or not hmac.compare_digest(row.key_hash, digest):
            raise Unauthorized("unknown or revoked API key")
        key_store.touch(session, row.id)
        return Principal(row.id, row.tenant, frozenset(Scope(s) for s in row.scopes))


def list_keys(
    ctx: Context, tenant: str | None = None, include_revoked: bool = False
) -> list[KeyRecord]:
    with ctx.db.transaction() as session:
        return key_store.list_keys(session, tenant, include_revoked)


def revoke_key(ctx: Context, key_id: uuid.UUID, by: Principal | None = None) -> None:
    """`by`: who asks; None is the command line."""
    with ctx.db.transaction() as session:
        if not key_store.revoke(session, key_id):
            raise NotFound(f"no active API key with id {key_id}")
        audit.record(session, by, AuditAction.KEY_REVOKE, {"key_id": key_id})
