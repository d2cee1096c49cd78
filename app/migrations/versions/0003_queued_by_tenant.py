"""Index queued jobs by queue, tenant, priority and age

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01

Ready ids live in one Redis list per queue, priority and tenant. The reconciler's sweep
compares each list's head with Postgres and walks the distinct lists of queued jobs; both need
the tenant in the index, right after the queue.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "ix_jobs_queued_by_tenant",
        "jobs",
        ["queue", "tenant", "priority", "run_at"],
        unique=False,
        postgresql_where=sa.text("status = 'queued'"),
    )
    op.drop_index("ix_jobs_queued_order", table_name="jobs")


def downgrade() -> None:
    op.create_index(
        "ix_jobs_queued_order",
        "jobs",
        ["queue", "priority", "run_at"],
        unique=False,
        postgresql_where=sa.text("status = 'queued'"),
    )
    op.drop_index("ix_jobs_queued_by_tenant", table_name="jobs")
