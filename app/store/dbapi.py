"""A plain psycopg2 connection, speaking the part of `Session.execute` the store's job
statements use, so that the same statements run on it unchanged.

An application that enqueues on its own psycopg2 connection (app/enqueue.py) hands it here;
so does the listener, with the connection it opened for LISTEN. Each statement is compiled
once for psycopg2, as SQLAlchemy's psycopg2 dialect would send it, and runs on a cursor of the
connection: the caller's transaction, its settings and its commit stay the caller's.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from psycopg2.extensions import connection as PgConnection  # type: ignore[import-untyped]
from psycopg2.extras import register_uuid  # type: ignore[import-untyped]
from sqlalchemy import TextClause
from sqlalchemy.dialects.postgresql.psycopg2 import PGDialect_psycopg2
from sqlalchemy.engine import Compiled

_DIALECT = PGDialect_psycopg2()  # type: ignore[no-untyped-call]
_compiled: dict[int, tuple[TextClause, Compiled]] = {}
# The store's statements that run here are a handful of module constants; the bound only
# keeps a statement built per call by mistake from growing the cache without end.
_MOST_COMPILED = 64


def _compile(statement: TextClause) -> Compiled:
    # Keyed by identity, the statement kept beside its compiled form so that its id is never
    # reused meanwhile.
    found = _compiled.get(id(statement))
    if found is None:
        if len(_compiled) >= _MOST_COMPILED:
            _compiled.clear()
        found = (statement, statement.compile(dialect=_DIALECT))
        _compiled[id(statement)] = found
    return found[1]


class Rows:
    """The rows of one statement, as plain tuples in column order."""

    def __init__(self, rows: list[tuple[Any, ...]]) -> None:
        self._rows = rows

    def all(self) -> list[tuple[Any, ...]]:
        return self._rows

    def __iter__(self) -> Iterator[tuple[Any, ...]]:
        return iter(self._rows)


class DbapiSession:
    """Runs the store's text statements on a psycopg2 connection, inside whatever transaction
    the connection has open (psycopg2 opens one at the first statement unless in autocommit).
    It never commits, rolls back or closes anything."""

    def __init__(self, connection: PgConnection) -> None:
        self.connection = connection

    def execute(self, statement: TextClause, params: Mapping[str, Any] | None = None) -> Rows:
        compiled = _compile(statement)
        with self.connection.cursor() as cursor:
            # uuid columns as uuid.UUID, as SQLAlchemy's dialect reads them; registered on this
            # cursor only, so the caller's own cursors read what they always read.
            register_uuid(None, cursor)
            cursor.execute(compiled.string, compiled.construct_params(dict(params or {})))
            rows = cursor.fetchall() if cursor.description is not None else []
        return Rows([tuple(row) for row in rows])
