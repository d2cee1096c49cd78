"""Database-level chores: wait for the server, create or drop a database, migrate, grant the
application's role what it needs, and the readiness probe.

Two roles, as a deployment should run them: the migration role owns the tables (it creates and
alters them), and the role of DATABASE_URL, which the API and the fleet use, may only read and
write rows. `migrate` grants the second what it needs after each run, including on tables
that later migrations create (default privileges). One role for both works too (development):
then there is nothing to grant.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, Engine, create_engine, pool, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from app.domain.errors import DatabaseNotReady, Unavailable
from app.domain.schemas import JobDefaults
from app.store.engine import APPLICATION_PREFIX, with_application_name

log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"
APPLICATION_NAME = APPLICATION_PREFIX + "migrate"
VERSION_TABLE = "alembic_version"  # Alembic's: the application role may read it, not change it
ROW_PRIVILEGES = "SELECT, INSERT, UPDATE, DELETE"  # no TRUNCATE, REFERENCES or TRIGGER
SEQUENCE_PRIVILEGES = "USAGE, SELECT"
ENQUEUE_SCHEMA = "jobfleet"  # jobfleet.enqueue() and the defaults it reads (migration 0007)

# What a server sends while it starts or stops (the official image's first start runs a
# temporary server, then restarts it) or when it is full: waiting cures these. Any other FATAL
# (a password, a missing role, a pg_hba.conf rule) would fail the same way at every attempt.
PASSING_REFUSALS = (
    "the database system is starting up",
    "the database system is shutting down",
    "the database system is in recovery mode",
    "the database system is not yet accepting connections",
    "the database system is not accepting connections",
    "sorry, too many clients already",
    "remaining connection slots are reserved",
)
FIRST_PAUSE = 0.1
LONGEST_PAUSE = 1.0
CONNECT_TIMEOUT = 5


def where(database_url: str) -> str:
    """host:port/database of a URL, without its user or password: for messages."""
    return database_url.rsplit("@", 1)[-1].split("?", 1)[0]


def _server_engine(database_url: str, connect_timeout: int = CONNECT_TIMEOUT) -> Engine:
    url = make_url(with_application_name(database_url, APPLICATION_NAME)).set(database="postgres")
    return create_engine(
        url,
        isolation_level="AUTOCOMMIT",
        poolclass=pool.NullPool,
        connect_args={"connect_timeout": connect_timeout},
    )


def _passing(error: OperationalError) -> bool:
    """Whether waiting may cure a failure to connect: no answer at all (refused, no route, a
    name that does not resolve yet, a timeout), or a refusal the server sends while it starts
    or stops."""
    message = str(error.orig)
    return "FATAL:" not in message or any(refusal in message for refusal in PASSING_REFUSALS)


def wait_for_server(
    database_url: str,
    seconds: float,
    clock: Callable[[], float] = time.monotonic,
    pause: Callable[[float], None] = time.sleep,
) -> int:
    """Poll until the server of `database_url` accepts a connection (as its role, to its
    `postgres` database), for up to `seconds`; returns how many attempts failed first.

    Raises Unavailable naming the server at the deadline, and at once on a failure that waiting
    does not cure (a wrong password, a missing role)."""
    deadline = clock() + seconds
    delay = FIRST_PAUSE
    failures = 0
    while True:
        left = deadline - clock()
        # libpq rounds a connect timeout below 2 s up to 2 s: a few hundred ms of lateness.
        engine = _server_engine(database_url, max(1, min(CONNECT_TIMEOUT, int(left) + 1)))
        try:
            with engine.connect() as connection:
                connection.execute(text("SELECT 1"))
            return failures
        except OperationalError as exc:
            reason = " ".join(str(exc.orig).split())
            if not _passing(exc):
                raise Unavailable(f"Postgres at {where(database_url)} refused: {reason}") from None
            failures += 1
            left = deadline - clock()
            if left <= 0:
                raise Unavailable(
                    f"Postgres at {where(database_url)} did not accept a connection within "
                    f"{seconds:g} s ({failures} attempts); the last error: {reason}"
                ) from None
            log.warning(
                "waiting for postgres",
                extra={
                    "action": "postgres_waiting",
                    "server": where(database_url),
                    "error": reason,
                    "seconds_left": round(left, 1),
                },
            )
            pause(min(delay, left))
            delay = min(LONGEST_PAUSE, delay * 2)
        finally:
            engine.dispose()


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
    url = with_application_name(database_url, APPLICATION_NAME)
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def migrate(
    database_url: str,
    revision: str = "head",
    migration_url: str = "",
    defaults: JobDefaults | None = None,
) -> str | None:
    """Create the database if missing and apply the migrations up to `revision`, connected as
    `migration_url` (default: `database_url`); write `defaults` (the settings' job defaults)
    where transactional enqueues read them; then grant the role of `database_url` what the
    API and the fleet need when it is another role. Returns the role granted, or None."""
    owner_url = migration_url or database_url
    ensure_database(owner_url)
    command.upgrade(alembic_config(owner_url), revision)
    if defaults is not None:
        publish_job_defaults(owner_url, defaults)
    if not migration_url:
        return None
    return grant_application_role(owner_url, database_url)


def publish_job_defaults(owner_url: str, defaults: JobDefaults) -> bool:
    """Keep jobfleet.job_defaults (migration 0007) equal to the settings' DEFAULT_MAX_RETRIES,
    DEFAULT_TIMEOUT_SECONDS and MAX_TIMEOUT_SECONDS, which POST /jobs applies: a job enqueued
    in an application's transaction, in Python or SQL, gets the same. False when the table does
    not exist (a database migrated to an earlier revision)."""
    engine = create_engine(
        with_application_name(owner_url, APPLICATION_NAME), poolclass=pool.NullPool
    )
    try:
        with engine.begin() as connection:
            if connection.scalar(text("SELECT to_regclass('jobfleet.job_defaults')")) is None:
                return False
            connection.execute(
                text(
                    "UPDATE jobfleet.job_defaults SET max_retries = :retries, "
                    "timeout_seconds = :timeout, max_timeout_seconds = :cap, updated_at = now()"
                ),
                {
                    "retries": defaults.max_retries,
                    "timeout": defaults.timeout_seconds,
                    "cap": defaults.max_timeout_seconds,
                },
            )
    finally:
        engine.dispose()
    return True


def _role_of(database_url: str) -> str:
    """The role a URL logs in as: its user, or (none given) whatever the server says."""
    user = make_url(database_url).username
    if user:
        return user
    engine = create_engine(
        with_application_name(database_url, APPLICATION_NAME), poolclass=pool.NullPool
    )
    try:
        with engine.connect() as connection:
            return str(connection.scalar(text("SELECT current_user")))
    finally:
        engine.dispose()


def grant_application_role(owner_url: str, database_url: str) -> str | None:
    """As the owner of the tables: let the role of `database_url` read and write the rows of
    every table and use every sequence, now and in tables the owner creates later, and nothing
    more (no DDL, no TRUNCATE). Idempotent. Returns the role granted, or None when both URLs
    log in as the same role."""
    role = _role_of(database_url)
    engine = create_engine(
        with_application_name(owner_url, APPLICATION_NAME), poolclass=pool.NullPool
    )
    try:
        with engine.begin() as connection:
            owner, database, schema = connection.execute(
                text("SELECT current_user, current_database(), current_schema()")
            ).one()
            if owner == role:
                return None
            if not connection.scalar(
                text("SELECT 1 FROM pg_roles WHERE rolname = :role"), {"role": role}
            ):
                raise DatabaseNotReady(
                    f"the role {role!r} of DATABASE_URL does not exist: create it (LOGIN, with "
                    f"no other rights) before migrating, then migrate again"
                )
            _check_owner(connection, owner, role, schema)
            _grant(connection, owner, role, database, schema)
            _warn_if_role_may_create(connection, role, schema)
    finally:
        engine.dispose()
    log.info(
        "application role granted",
        extra={"action": "role_granted", "role": role, "owner": owner, "schema": schema},
    )
    return role


def _grant(connection: Connection, owner: str, role: str, database: str, schema: str) -> None:
    quote = connection.dialect.identifier_preparer.quote
    to, by, db, sch = quote(role), quote(owner), quote(database), quote(schema)
    version_table = f"{sch}.{quote(VERSION_TABLE)}"
    for statement in (
        f"GRANT CONNECT ON DATABASE {db} TO {to}",
        f"GRANT USAGE ON SCHEMA {sch} TO {to}",
        f"GRANT {ROW_PRIVILEGES} ON ALL TABLES IN SCHEMA {sch} TO {to}",
        f"REVOKE INSERT, UPDATE, DELETE ON {version_table} FROM {to}",
        f"GRANT {SEQUENCE_PRIVILEGES} ON ALL SEQUENCES IN SCHEMA {sch} TO {to}",
        # Tables and sequences that later migrations create, as this role, are granted too.
        f"ALTER DEFAULT PRIVILEGES FOR ROLE {by} IN SCHEMA {sch} "
        f"GRANT {ROW_PRIVILEGES} ON TABLES TO {to}",
        f"ALTER DEFAULT PRIVILEGES FOR ROLE {by} IN SCHEMA {sch} "
        f"GRANT {SEQUENCE_PRIVILEGES} ON SEQUENCES TO {to}",
    ):
        connection.execute(text(statement))
    if connection.scalar(text("SELECT to_regnamespace(:name)"), {"name": ENQUEUE_SCHEMA}):
        # Transactional enqueue (migration 0007): the defaults it reads, and jobfleet.enqueue().
        for statement in (
            f"GRANT USAGE ON SCHEMA {ENQUEUE_SCHEMA} TO {to}",
            f"GRANT SELECT ON {ENQUEUE_SCHEMA}.job_defaults TO {to}",
            f"GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA {ENQUEUE_SCHEMA} TO {to}",
        ):
            connection.execute(text(statement))


def _check_owner(connection: Connection, owner: str, role: str, schema: str) -> None:
    """Only the owner of a table (or a member of its owning role) may grant its use: name the
    tables another role owns (created before the roles were split, say) and how to fix it."""
    foreign = connection.scalars(
        text(
            "SELECT tablename FROM pg_tables WHERE schemaname = :schema "
            "AND NOT pg_has_role(current_user, tableowner, 'USAGE') ORDER BY tablename"
        ),
        {"schema": schema},
    ).all()
    if foreign:
        raise DatabaseNotReady(
            f"the role {role!r} of DATABASE_URL cannot be granted the tables "
            f"{', '.join(foreign)}: another role than {owner!r} (MIGRATION_DATABASE_URL) owns "
            f"them; make {owner!r} their owner (ALTER TABLE ... OWNER TO), then migrate again"
        )


def _warn_if_role_may_create(connection: Connection, role: str, schema: str) -> None:
    """Postgres before 15 lets every role create tables in `public`: say so, with the fix."""
    if connection.scalar(
        text("SELECT has_schema_privilege(:role, :schema, 'CREATE')"),
        {"role": role, "schema": schema},
    ):
        log.warning(
            "the application role may create tables",
            extra={
                "action": "role_may_create",
                "role": role,
                "schema": schema,
                "fix": f"REVOKE CREATE ON SCHEMA {schema} FROM PUBLIC (as the schema's owner)",
            },
        )


def ping(session: Session) -> None:
    session.execute(text("SELECT 1"))
