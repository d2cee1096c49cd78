"""Schedules

Revision ID: 0006
Revises: 0005
Create Date: 2027-02-01

`schedules` holds each tenant's cron schedules: the expression and its time zone, the template
of the job each fire creates, whether it is enabled, its misfire policy, and `next_fire_at`,
the next fire time in UTC. The schedules duty reads the due ones through the partial index on
`next_fire_at` of enabled schedules, locks them (FOR UPDATE SKIP LOCKED), creates their jobs
and moves `next_fire_at` on, in one transaction.

A fire's job carries the idempotency key `schedule:<schedule id>:<fire time>`; a schedule's
page lists its latest jobs by that key. The partial index `ix_jobs_schedule_key` holds only
such jobs, keyed in byte order (COLLATE "C"), so that one schedule's keys are a range of it
whatever the database's collation; it is built CONCURRENTLY, as jobs may be a large table.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCHEDULE_KEY_INDEX = "ix_jobs_schedule_key"
SCHEDULE_KEY_DEFINITION = (
    "ON jobs (tenant, (idempotency_key COLLATE \"C\")) WHERE idempotency_key LIKE 'schedule:%'"
)


def upgrade() -> None:
    op.create_table(
        "schedules",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("tenant", sa.String(length=128), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("cron", sa.Text(), nullable=False),
        sa.Column("timezone", sa.Text(), nullable=False),
        sa.Column("task", sa.String(length=128), nullable=False),
        sa.Column(
            "payload",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
        sa.Column("queue", sa.String(length=64), nullable=False),
        sa.Column("priority", sa.SmallInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("max_retries", sa.Integer(), nullable=True),
        sa.Column("timeout_seconds", sa.Integer(), nullable=True),
        sa.Column("enabled", sa.Boolean(), server_default=sa.text("true"), nullable=False),
        sa.Column("misfire_policy", sa.String(length=16), nullable=False),
        sa.Column("next_fire_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_fired_at", sa.DateTime(timezone=True), nullable=True),
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
        sa.CheckConstraint(
            "misfire_policy IN ('skip','run_latest')", name="ck_schedules_misfire_policy"
        ),
        sa.CheckConstraint("priority BETWEEN 0 AND 9", name="ck_schedules_priority"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("tenant", "name", name="uq_schedules_tenant_name"),
    )
    op.create_index(
        "ix_schedules_due",
        "schedules",
        ["next_fire_at"],
        postgresql_where=sa.text("enabled"),
    )
    with op.get_context().autocommit_block():
        bind = op.get_bind()
        invalid = bind.scalar(
            sa.text("SELECT NOT indisvalid FROM pg_index WHERE indexrelid = to_regclass(:name)"),
            {"name": SCHEDULE_KEY_INDEX},
        )
        if invalid:  # a failed concurrent build: drop it so that this one builds it again
            op.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {SCHEDULE_KEY_INDEX}")
        op.execute(
            f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {SCHEDULE_KEY_INDEX} "
            f"{SCHEDULE_KEY_DEFINITION}"
        )


def downgrade() -> None:
    with op.get_context().autocommit_block():
        op.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {SCHEDULE_KEY_INDEX}")
    op.drop_index("ix_schedules_due", table_name="schedules")
    op.drop_table("schedules")
