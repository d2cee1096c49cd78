"""Running jobs indexed by lease token; autovacuum settings of the tables that churn

Revision ID: 0008
Revises: 0007
Create Date: 2027-01-20

Every job passes through `processing` once per attempt, and each status change writes a new row
version with new index entries; the old ones stay until VACUUM removes them. The partial index
of running jobs was keyed by `lease_expires_at`, which only grows: new entries went to its right
end and the dead ones piled up on the left, where recovery's `lease_expires_at < now()` had to
walk every one of them (half a second per query at a million jobs churned without VACUUM).
`ix_jobs_processing_token` is keyed by the lease token, a random UUID: new entries land all
over the index, and an insert into a page full of entries that scans have found dead reclaims
them instead of splitting the page, so the index stays the size of the work in play. The lease
renewal, which names the token, no longer changes an indexed column: Postgres can write it as a
heap-only update, with no new index entries at all. Both indexes are built and dropped
CONCURRENTLY, so that submits, claims and finishes go on meanwhile.

Per-table autovacuum settings (storage parameters; docs/DECISIONS.md says why each value):

- jobs: vacuum after 2% of its rows (plus 1,000) are dead, analyse after 2% changed, with five
  times the default cost budget and the default 2 ms delay pinned;
- job_attempts: rows are inserted, and deleted by retention: vacuum after 5% dead or 5% newly
  inserted (which keeps its visibility map and freezing current), the same budget;
- job_stats: each stats round replaces its last minutes: vacuum after 5% dead.

A server with autovacuum off ignores them; VACUUM by hand is then the operator's
(docs/OPERATIONS.md, "Vacuum and the job tables").
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SETTINGS = {
    "jobs": {
        "autovacuum_vacuum_scale_factor": "0.02",
        "autovacuum_vacuum_threshold": "1000",
        "autovacuum_analyze_scale_factor": "0.02",
        "autovacuum_vacuum_cost_limit": "1000",
        "autovacuum_vacuum_cost_delay": "2",
    },
    "job_attempts": {
        "autovacuum_vacuum_scale_factor": "0.05",
        "autovacuum_vacuum_insert_scale_factor": "0.05",
        "autovacuum_vacuum_cost_limit": "1000",
        "autovacuum_vacuum_cost_delay": "2",
    },
    "job_stats": {
        "autovacuum_vacuum_scale_factor": "0.05",
    },
}

NEW_INDEX = (
    "CREATE INDEX CONCURRENTLY IF NOT EXISTS ix_jobs_processing_token ON jobs (lease_token) "
    "WHERE status = 'processing'"
)
OLD_INDEX = (
    "CREATE INDEX CONCURRENTLY IF NOT EXISTS ix_jobs_processing_lease ON jobs "
    "(lease_expires_at) WHERE status = 'processing'"
)


def _drop_if_invalid(name: str) -> None:
    """A concurrent build that failed leaves an invalid index behind, which IF NOT EXISTS
    would keep: drop it so that running the migration again builds it."""
    op.execute(
        f"""
        DO $$ BEGIN
            IF EXISTS (SELECT 1 FROM pg_index
                        WHERE indexrelid = to_regclass('{name}') AND NOT indisvalid) THEN
                EXECUTE 'DROP INDEX {name}';
            END IF;
        END $$
        """
    )


def upgrade() -> None:
    for table, settings in SETTINGS.items():
        values = ", ".join(f"{name} = {value}" for name, value in settings.items())
        op.execute(f"ALTER TABLE {table} SET ({values})")
    with op.get_context().autocommit_block():
        _drop_if_invalid("ix_jobs_processing_token")
        op.execute(NEW_INDEX)
        op.execute("DROP INDEX CONCURRENTLY IF EXISTS ix_jobs_processing_lease")


def downgrade() -> None:
    with op.get_context().autocommit_block():
        _drop_if_invalid("ix_jobs_processing_lease")
        op.execute(OLD_INDEX)
        op.execute("DROP INDEX CONCURRENTLY IF EXISTS ix_jobs_processing_token")
    for table, settings in SETTINGS.items():
        op.execute(f"ALTER TABLE {table} RESET ({', '.join(settings)})")
