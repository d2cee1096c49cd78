"""Index only scheduled jobs by run_at

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22

The promoter is the only reader of (status, run_at), and only for scheduled jobs. A full index
held every finished job too, and every status change of a running job rewrote an entry in it;
a partial index keeps the claim and finish updates cheap however long the history grows.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "ix_jobs_scheduled_run_at",
        "jobs",
        ["run_at"],
        unique=False,
        postgresql_where=sa.text("status = 'scheduled'"),
    )
    op.drop_index("ix_jobs_status_run_at", table_name="jobs")


def downgrade() -> None:
    op.create_index("ix_jobs_status_run_at", "jobs", ["status", "run_at"], unique=False)
    op.drop_index("ix_jobs_scheduled_run_at", table_name="jobs")
