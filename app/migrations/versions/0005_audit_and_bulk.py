"""The audit log and bulk operations

Revision ID: 0005
Revises: 0004
Create Date: 2027-01-10

`audit_events` records every change an API key or the command line makes (who, what, when,
the request id), written in the transaction of the change. It is append-only: a trigger
refuses any UPDATE, and any DELETE of a row less than a day old, so that whoever holds the
application's role can neither rewrite nor erase recent history (retention deletes rows older
than AUDIT_RETENTION_SECONDS, at least a day). TRUNCATE is not among the application role's
privileges.

`bulk_operations` holds each bulk action on the jobs matching a filter: the filter as JSON,
its progress and its keyset position, so that any process's duty resumes it after a restart.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_APPEND_ONLY = """
CREATE FUNCTION audit_events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' THEN
        RAISE EXCEPTION 'audit_events is append-only: rows are never updated'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF OLD.at > now() - interval '1 day' THEN
        RAISE EXCEPTION 'audit_events is append-only: rows younger than a day stay'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN OLD;
END
$$
"""


def upgrade() -> None:
    op.create_table(
        "audit_events",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column(
            "at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
        ),
        sa.Column("actor", sa.String(length=8), nullable=False),
        sa.Column("key_id", sa.UUID(), nullable=True),
        sa.Column("tenant", sa.String(length=128), nullable=True),
        sa.Column("action", sa.String(length=32), nullable=False),
        sa.Column(
            "target",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
        sa.Column("request_id", sa.String(length=128), nullable=True),
        sa.CheckConstraint("actor IN ('key', 'cli')", name="ck_audit_events_actor"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_audit_events_tenant", "audit_events", ["tenant", "id"])
    op.create_index("ix_audit_events_key", "audit_events", ["key_id", "id"])
    op.create_index("ix_audit_events_action", "audit_events", ["action", "id"])
    op.create_index("ix_audit_events_at", "audit_events", ["at"])
    op.execute(_APPEND_ONLY)
    op.execute(
        "CREATE TRIGGER audit_events_append_only BEFORE UPDATE OR DELETE ON audit_events "
        "FOR EACH ROW EXECUTE FUNCTION audit_events_append_only()"
    )

    op.create_table(
        "bulk_operations",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("owner", sa.String(length=128), nullable=False),
        sa.Column("key_id", sa.UUID(), nullable=True),
        sa.Column("action", sa.String(length=16), nullable=False),
        sa.Column("query", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("total", sa.BigInteger(), nullable=False),
        sa.Column("done", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("skipped", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("position", sa.UUID(), nullable=True),
        sa.Column("last_id", sa.UUID(), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("request_id", sa.String(length=128), nullable=True),
        sa.CheckConstraint(
            "action IN ('cancel','retry','replay','delete')", name="ck_bulk_operations_action"
        ),
        sa.CheckConstraint(
            "state IN ('pending','running','done','cancelled')", name="ck_bulk_operations_state"
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "ix_bulk_operations_active",
        "bulk_operations",
        ["created_at"],
        postgresql_where=sa.text("state IN ('pending', 'running')"),
    )
    op.create_index("ix_bulk_operations_owner", "bulk_operations", ["owner", "id"])
    op.create_index(
        "ix_bulk_operations_finished",
        "bulk_operations",
        ["finished_at"],
        postgresql_where=sa.text("state IN ('done', 'cancelled')"),
    )


def downgrade() -> None:
    op.drop_table("bulk_operations")
    op.drop_table("audit_events")
    op.execute("DROP FUNCTION audit_events_append_only()")
