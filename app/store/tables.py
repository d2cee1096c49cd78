"""The health of the tables that churn, as Postgres counts it: live and dead row versions, the
last vacuum, and whether autovacuum may run (the scrape-time gauges read it)."""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.orm import Session

from app.domain.records import TableHealth

# The tables whose rows are updated or deleted all day long (migration 0008 tunes their
# autovacuum): a fixed list, so that the gauges' `table` label has these values only.
CHURNING = ("jobs", "job_attempts", "job_stats")

# The statistics collector's counters (n_dead_tup is what autovacuum compares with its
# threshold); free to read for any role. A table whose `autovacuum_enabled` storage parameter
# is false, or a server with autovacuum off, is vacuumed by hand or not at all.
_HEALTH = text(
    """
    SELECT t.relname AS name, t.n_live_tup, t.n_dead_tup,
           greatest(t.last_vacuum, t.last_autovacuum) AS last_vacuum,
           current_setting('autovacuum')::boolean
           AND coalesce((SELECT o.option_value::boolean
                           FROM pg_options_to_table(c.reloptions) AS o
                          WHERE o.option_name = 'autovacuum_enabled'), true) AS autovacuum
      FROM pg_stat_user_tables t JOIN pg_class c ON c.oid = t.relid
     WHERE t.schemaname = current_schema() AND t.relname = ANY(:tables)
     ORDER BY t.relname
    """
)


def table_health(session: Session) -> list[TableHealth]:
    """One record per table of CHURNING (those the schema has)."""
    rows = session.execute(_HEALTH, {"tables": list(CHURNING)}).all()
    return [
        TableHealth(r.name, int(r.n_live_tup), int(r.n_dead_tup), r.last_vacuum, r.autovacuum)
        for r in rows
    ]
