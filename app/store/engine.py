"""One SQLAlchemy engine per process, created on first use.

A forked child must never talk over its parent's sockets: when the pid changes, the inherited
pool is dropped without closing its connections (closing them would end the parent's sessions)
and a fresh engine is built.

Each engine holds at most `Pool.most` connections, so that the connections of a deployment add
up to a number Postgres's `max_connections` can be sized for (docs/OPERATIONS.md, "Sizing
Postgres connections"), and shows Postgres the role of its process as `application_name`
(`pg_stat_activity` then tells an API's connections from a worker's).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeAlias

from sqlalchemy import Connection, Engine, create_engine
from sqlalchemy.engine import make_url

from app.settings import Settings

if TYPE_CHECKING:  # the ORM is loaded by the first session of a process, not at import
    from sqlalchemy.orm import Session, sessionmaker

APPLICATION_PREFIX = "jobfleet-"

# What a store function runs its statements on: a session (`Database.transaction`) or a Core
# connection (`Database.begin`, the job path's); the store's statements run alike on both.
Executor: TypeAlias = "Session | Connection"


@dataclass(frozen=True)
class Pool:
    """The connections one process's engine may open: `size` kept, `overflow` more under
    load; `role` names the process in `application_name` (jobfleet-<role>)."""

    size: int
    overflow: int = 0
    role: str = "app"

    @property
    def most(self) -> int:
        return self.size + self.overflow

    @property
    def application_name(self) -> str:
        return APPLICATION_PREFIX + self.role


def with_application_name(url: str, name: str) -> str:
    """The URL with `application_name` set, unless it sets one of its own."""
    parsed = make_url(url)
    if "application_name" in parsed.query:
        return url
    named = parsed.update_query_dict({"application_name": name})
    return named.render_as_string(hide_password=False)


class Database:
    def __init__(
        self, settings: Settings, statement_timeout_ms: int = 0, pool: Pool | None = None
    ) -> None:
        """`statement_timeout_ms`: Postgres cancels any statement of these sessions that runs
        longer (0: never). The API sets one; the fleet's maintenance queries may run long.
        `pool`: by default an API worker's (DB_POOL_SIZE + DB_MAX_OVERFLOW)."""
        self._url = settings.database_url
        self._pool = pool or Pool(settings.db_pool_size, settings.db_max_overflow)
        self._statement_timeout_ms = statement_timeout_ms
        self._engine: Engine | None = None
        self._sessions: sessionmaker[Session] | None = None
        self._pid = 0
        self._lock = threading.Lock()
        # The dialect's and the driver's modules now, in the process that makes this object
        # rather than in each one its engine is built in: a fleet's manager makes one before it
        # forks its first children, which then find them loaded instead of each importing them
        # (about a tenth of a second of CPU) before its first claim.
        make_url(self._url).get_dialect().import_dbapi()

    @property
    def engine(self) -> Engine:
        if self._engine is None or self._pid != os.getpid():
            with self._lock:
                if self._engine is None or self._pid != os.getpid():
                    self._build()
        assert self._engine is not None
        return self._engine

    def _build(self) -> None:
        if self._engine is not None:
            self._engine.dispose(close=False)
        options = "-c timezone=UTC"
        if self._statement_timeout_ms:
            options += f" -c statement_timeout={self._statement_timeout_ms}"
        self._engine = create_engine(
            with_application_name(self._url, self._pool.application_name),
            pool_size=self._pool.size,
            max_overflow=self._pool.overflow,
            pool_recycle=1800,
            # A failed statement's error never lists its parameters: they hold job payloads.
            hide_parameters=True,
            connect_args={"options": options, "connect_timeout": 5},
        )
        self._pid = os.getpid()

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """One unit of work: commits when the block ends, rolls back if it raises."""
        with self._session_factory()() as session, session.begin():
            yield session

    @contextmanager
    def begin(self) -> Iterator[Connection]:
        """One unit of work on a Core connection: commits when the block ends, rolls back if
        it raises. The job path's (claim, finish, lease renewal): its statements need no
        session, so a worker process never loads the ORM's modules (about a tenth of a second
        of CPU that its manager would otherwise spend before forking it)."""
        with self.engine.begin() as connection:
            yield connection

    def _session_factory(self) -> sessionmaker[Session]:
        engine = self.engine
        sessions = self._sessions
        if sessions is None or sessions.kw["bind"] is not engine:
            with self._lock:
                if self._sessions is None or self._sessions.kw["bind"] is not engine:
                    from sqlalchemy.orm import sessionmaker

                    self._sessions = sessionmaker(engine, expire_on_commit=False)
                sessions = self._sessions
        return sessions

    @property
    def pool(self) -> Pool:
        return self._pool

    def dispose(self) -> None:
        if self._engine is not None and self._pid == os.getpid():
            self._engine.dispose()
        self._engine = None
