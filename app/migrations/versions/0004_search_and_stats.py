"""Search indexes on jobs, and the per-minute job statistics

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-08

Job searches filter by queue and task, look inside payloads (JSONB containment) and inside
error text (a case-insensitive substring), newest first. Each gets an index, built
CONCURRENTLY so that submits and finishes go on while a large table is indexed:

- (queue, created_at, id) and (task, created_at, id): a filter on a queue or task walks its
  own jobs newest first, however rare they are in the table;
- GIN (payload jsonb_path_ops): containment, `payload @> '{"order": 1001}'`;
- (queue, tenant) where the job failed: the overview counts the dead-letter queue per queue
  (and tenant) from the index alone, without visiting each failed job's row;
- GIN (last_error gin_trgm_ops) where last_error is set: `last_error ILIKE '%refused%'`.
  It needs the pg_trgm extension (in PostgreSQL's contrib, trusted since PostgreSQL 13: the
  database's owner, which migrations run as, may create it). A server built without contrib
  gets no such index: error searches then read the failed jobs one by one, correct and slower.
  Install contrib and run the two statements logged by this migration to add it later.

`job_stats` holds per minute, queue and tenant how many jobs completed and failed, filled by
the stats duty from the jobs' finished_at; the overview reads the last hour of it.
`stats_marks` holds how far the duty has counted, so a round after a pause starts there.
"""

import logging
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

log = logging.getLogger("alembic.runtime.migration")

TRIGRAM_EXTENSION = "CREATE EXTENSION IF NOT EXISTS pg_trgm"
TRIGRAM_INDEX = (
    "CREATE INDEX CONCURRENTLY IF NOT EXISTS ix_jobs_last_error_trgm ON jobs "
    "USING gin (last_error gin_trgm_ops) WHERE last_error IS NOT NULL"
)
INDEXES = {
    "ix_jobs_queue_created": "ON jobs (queue, created_at, id)",
    "ix_jobs_task_created": "ON jobs (task, created_at, id)",
    "ix_jobs_payload": "ON jobs USING gin (payload jsonb_path_ops)",
    "ix_jobs_failed_by_queue": "ON jobs (queue, tenant) WHERE status = 'failed'",
}


def _drop_if_invalid(name: str) -> None:
    """A concurrent build that failed leaves an invalid index behind, which IF NOT EXISTS
    would keep: drop it so that running the migration again builds it."""
    bind = op.get_bind()
    invalid = bind.scalar(
        sa.text("SELECT NOT indisvalid FROM pg_index WHERE indexrelid = to_regclass(:name)"),
        {"name": name},
    )
    if invalid:
        op.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {name}")


def upgrade() -> None:
    op.create_table(
        "job_stats",
        sa.Column("minute", sa.DateTime(timezone=True), nullable=False),
        sa.Column("queue", sa.String(length=64), nullable=False),
        sa.Column("tenant", sa.String(length=128), nullable=False),
        sa.Column("completed", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("failed", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.PrimaryKeyConstraint("minute", "queue", "tenant"),
    )
    op.create_index("ix_job_stats_tenant_minute", "job_stats", ["tenant", "minute"])
    op.create_table(
        "stats_marks",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("through", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )
    bind = op.get_bind()
    trigrams = bool(
        bind.scalar(sa.text("SELECT 1 FROM pg_available_extensions WHERE name = 'pg_trgm'"))
    )
    if trigrams:
        op.execute(TRIGRAM_EXTENSION)
    with op.get_context().autocommit_block():
        for name, definition in INDEXES.items():
            _drop_if_invalid(name)
            op.execute(f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {name} {definition}")
        if trigrams:
            _drop_if_invalid("ix_jobs_last_error_trgm")
            op.execute(TRIGRAM_INDEX)
    if not trigrams:
        log.warning(
            "pg_trgm is not available on this server: error searches will not be indexed; "
            "install PostgreSQL's contrib package, then run as the owner: %s; %s",
            TRIGRAM_EXTENSION,
            TRIGRAM_INDEX,
        )


def downgrade() -> None:
    with op.get_context().autocommit_block():
        for name in ("ix_jobs_last_error_trgm", *INDEXES):
            op.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {name}")
    op.drop_table("stats_marks")
    op.drop_index("ix_job_stats_tenant_minute", table_name="job_stats")
    op.drop_table("job_stats")
