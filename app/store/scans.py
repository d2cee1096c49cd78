"""Plain index scans for the queries that read the partial indexes of work in play.

Those indexes (running jobs by lease token, scheduled jobs by run_at) hold an entry for every
job that ever passed through until VACUUM removes the dead ones. A plain index scan marks each
entry whose row version it finds dead to every transaction; later scans skip marked entries
without reading the table, and an insert into a page full of them reclaims them, so the index
keeps to the size of the work in play while VACUUM lags (docs/ARCHITECTURE.md, "Dead row
versions and the indexes of work in play"). A bitmap scan marks nothing: every scan then reads
every dead entry and its row, and the index grows with every job. The planner prefers a bitmap
scan on a table it has never analysed, which is every table of a server without autovacuum
(half a second per query of recovery at a million jobs churned).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from sqlalchemy import text

if TYPE_CHECKING:
    from app.store.engine import Executor


@contextmanager
def plain_index_scans(session: Executor) -> Iterator[None]:
    """Plan the statements inside without bitmap scans; the transaction's setting is restored
    after them."""
    previous = session.scalar(text("SELECT current_setting('enable_bitmapscan')"))
    session.execute(text("SET LOCAL enable_bitmapscan = off"))
    yield
    # Not in a `finally`: after an error the transaction is aborted and is rolled back, which
    # undoes the SET LOCAL; a statement sent to restore it would fail and hide that error.
    session.execute(
        text("SELECT set_config('enable_bitmapscan', :previous, true)"),
        {"previous": previous},
    )
