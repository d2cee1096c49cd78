"""Database-level chores: create or drop a database, migrate, and the readiness probe."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"


def _server_engine(database_url: str):  # type: ignore[no-untyped-def]
    url = make_url(database_url).set(database="postgres")
    return create_engine(url, isolation_level="AUTOCOMMIT", poolclass=None)


def ensure_database(database_url: str) -> bool:
    """Create the URL's database when it is missing; True when it was created."""
    name = make_url(database_url).database
    engine = _server_engine(database_url)
    try:
        with engine.connect() as connection:
            exists = connection.scalar(
                text("SELECT 1 FROM pg_database WHERE datname = :name"), {"name": name}
            )
            if exists:
                return False
            connection.execute(text(f'CREATE DATABASE "{name}"'))
            return True
    finally:
        engine.dispose()


def drop_database(database_url: str) -> None:
    name = make_url(database_url).database
    engine = _server_engine(database_url)
    try:
        with engine.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        engine.dispose()


def alembic_config(database_url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return config


def migrate(database_url: str, revision: str = "head") -> None:
    ensure_database(database_url)
    command.upgrade(alembic_config(database_url), revision)


def ping(session: Session) -> None:
    session.execute(text("SELECT 1"))
