"""The listener's own Postgres connection: LISTEN on the enqueued channel, wait for the ids
that committed transactions announced, and read those jobs.

A plain psycopg2 connection in autocommit mode, outside every pool (a pooled connection would
be handed to another thread, and its LISTEN with it). It is opened in the thread that uses it
and named `jobfleet-listener` in pg_stat_activity. TCP keepalives make a server that vanished
without a word (a network partition) show as an error within about half a minute.
"""

from __future__ import annotations

import select

import psycopg2  # type: ignore[import-untyped]
from psycopg2.extensions import connection as PgConnection  # type: ignore[import-untyped]
from sqlalchemy.engine import make_url

from app.domain.records import BriefJob
from app.store import jobs
from app.store.dbapi import DbapiSession
from app.store.engine import APPLICATION_PREFIX, with_application_name

APPLICATION_NAME = APPLICATION_PREFIX + "listener"


def libpq_url(database_url: str) -> str:
    """A SQLAlchemy URL (postgresql+psycopg2://...) as libpq reads it (postgresql://...)."""
    return make_url(database_url).set(drivername="postgresql").render_as_string(hide_password=False)


class Listening:
    """A connection that listens on the enqueued channel from the moment it is made."""

    def __init__(self, database_url: str) -> None:
        self.connection: PgConnection = psycopg2.connect(
            libpq_url(with_application_name(database_url, APPLICATION_NAME)),
            connect_timeout=5,
            options="-c timezone=UTC",
            keepalives=1,
            keepalives_idle=10,
            keepalives_interval=5,
            keepalives_count=3,
        )
        try:
            self.connection.autocommit = True
            with self.connection.cursor() as cursor:
                cursor.execute(f"LISTEN {jobs.ENQUEUED_CHANNEL}")
        except BaseException:
            self.connection.close()
            raise
        self._session = DbapiSession(self.connection)

    def wait(self, timeout: float) -> list[str]:
        """The payloads notified since the last call (job ids, as text), in order; waits up to
        `timeout` seconds for the first when none is pending."""
        connection = self.connection
        if not connection.notifies:
            readable, _, _ = select.select([connection], [], [], timeout)
            if not readable:
                return []
        connection.poll()  # reads whatever arrived; raises if the server is gone
        payloads = [notice.payload for notice in connection.notifies]
        connection.notifies.clear()
        return payloads

    def waiting_jobs(self, job_ids: list[str]) -> list[BriefJob]:
        """Those of the jobs that still wait (queued or scheduled), as they are now."""
        return jobs.waiting_jobs(self._session, job_ids)

    def close(self) -> None:
        self.connection.close()
