"""The hardware ceiling the benchmark reads every figure against: how many single-row
INSERT + COMMIT round trips one client gets from this Postgres."""

from __future__ import annotations

import time

from sqlalchemy import create_engine, text


def insert_commit_rate(database_url: str, seconds: float) -> float:
    """Rows per second, one client, one row per transaction, for `seconds`."""
    engine = create_engine(database_url, pool_size=1)
    try:
        with engine.connect() as connection:
            connection.execute(text("CREATE TEMP TABLE ceiling (id bigint, at timestamptz)"))
            connection.commit()
            rows = 0
            deadline = time.perf_counter() + seconds
            started = time.perf_counter()
            while time.perf_counter() < deadline:
                connection.execute(text("INSERT INTO ceiling VALUES (:n, now())"), {"n": rows})
                connection.commit()
                rows += 1
            return rows / (time.perf_counter() - started)
    finally:
        engine.dispose()
