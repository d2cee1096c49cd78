"""Two database roles, as production runs them: `migrate` logs in as the owner of the tables
(MIGRATION_DATABASE_URL) and grants the role of DATABASE_URL the use of the rows; the API and
the fleet's services then work as that role, which cannot change the schema."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, create_engine, pool, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ProgrammingError

from app.domain.errors import DatabaseNotReady
from app.domain.states import AttemptOutcome
from app.main import create_app
from app.services import auth, execution
from app.services.context import Context
from app.services.maintenance import Retention
from app.settings import Settings
from app.store.admin import drop_database, migrate
from devtools.sandbox import delete_keys
from tests.fleet_support import job_row, submit


@dataclass
class Roles:
    owner: str
    app: str
    owner_url: str
    app_url: str
    settings: Settings  # the API's and the fleet's: DATABASE_URL logs in as `app`


def url_as(database_url: str, user: str, database: str) -> str:
    return (
        make_url(database_url)
        .set(username=user, password=None, database=database)
        .render_as_string(hide_password=False)
    )


def engine_of(url: str) -> Engine:
    return create_engine(url, poolclass=pool.NullPool, isolation_level="AUTOCOMMIT")


def run_sql(url: str, *statements: str) -> None:
    engine = engine_of(url)
    try:
        with engine.connect() as connection:
            for statement in statements:
                connection.execute(text(statement))
    finally:
        engine.dispose()


@pytest.fixture
def roles(settings: Settings) -> Iterator[Roles]:
    """An owner role (may create databases) and a login-only application role of this test's
    own, on the suite's server, with a database name nobody uses yet."""
    run = uuid.uuid4().hex[:8]
    owner, app = f"jf_owner_{run}", f"jf_app_{run}"
    database = f"jobfleet_roles_{run}"
    superuser = url_as(settings.database_url, "postgres", "postgres")
    run_sql(superuser, f"CREATE ROLE {owner} LOGIN CREATEDB", f"CREATE ROLE {app} LOGIN")
    app_url = url_as(settings.database_url, app, database)
    app_settings = settings.model_copy(
        update={
            "database_url": app_url,
            "key_prefix": f"jfroles{run}",
            "retention_seconds": 0.001,
            "dlq_retention_seconds": 0.001,
        }
    )
    try:
        yield Roles(
            owner, app, url_as(settings.database_url, owner, database), app_url, app_settings
        )
    finally:
        for name in (database, f"{database}_legacy"):
            drop_database(url_as(settings.database_url, "postgres", name))
        # Their grants went with the databases; nothing else refers to the roles.
        run_sql(superuser, f"DROP ROLE IF EXISTS {app}", f"DROP ROLE IF EXISTS {owner}")
        ctx = Context(app_settings)
        delete_keys(ctx.redis.client, app_settings.key_prefix)
        ctx.close()


def refused(url: str, statement: str) -> str:
    """The error Postgres answers `statement` with (the test fails if it is allowed)."""
    with pytest.raises(ProgrammingError) as error:
        run_sql(url, statement)
    return str(error.value.orig)


def test_the_application_role_uses_the_rows_and_cannot_change_the_schema(roles: Roles) -> None:
    assert migrate(roles.app_url, migration_url=roles.owner_url) == roles.app
    ctx = Context(roles.settings)
    try:
        # The API, as the application role: a key (api_keys), a submit (group commit).
        _, key = auth.create_key(ctx, "acme", [auth.Scope.PRODUCER])
        with TestClient(create_app(roles.settings)) as client:
            reply = client.post(
                "/jobs", json={"task": "noop"}, headers={"Authorization": f"Bearer {key}"}
            )
            assert reply.status_code == 201, reply.text
            ready = client.get("/ready")
            assert ready.status_code == 200, ready.text
        done = reply.json()["id"]
        failed = submit(ctx, task="noop", max_retries=0)
        # The fleet's steps, as the application role: claim, renew, finish, fail.
        claimed = execution.claim(ctx, [done, failed], "host:1:1")
        assert len(claimed) == 2
        assert set(execution.renew_leases(ctx, [(c.id, c.lease_token) for c in claimed])) == {
            c.id for c in claimed
        }
        by_id = {str(c.id): c for c in claimed}
        assert execution.complete(ctx, by_id[done].lease, '"ok"')
        outcome = execution.fail(ctx, by_id[failed].lease, "boom", AttemptOutcome.FAILED)
        assert outcome is not None and outcome.status == "failed"
        assert job_row(ctx, done).status == "completed"
        # Retention deletes both, their attempts with them (both are past the test's retention).
        assert Retention(ctx).run_once(time.time()) == 2
    finally:
        ctx.close()

    # No DDL, no TRUNCATE, no changing the migration history.
    assert "must be owner" in refused(roles.app_url, "DROP TABLE jobs")
    assert "must be owner" in refused(roles.app_url, "ALTER TABLE jobs ADD COLUMN x int")
    assert "permission denied" in refused(roles.app_url, "CREATE TABLE mine (id int)")
    assert "permission denied" in refused(roles.app_url, "TRUNCATE jobs")
    assert "permission denied" in refused(
        roles.app_url, "UPDATE alembic_version SET version_num = 'x'"
    )
    run_sql(roles.app_url, "SELECT version_num FROM alembic_version")  # reading it is allowed

    # Again: the grants are idempotent, and the role still works.
    assert migrate(roles.app_url, migration_url=roles.owner_url) == roles.app
    ctx = Context(roles.settings)
    try:
        assert job_row(ctx, submit(ctx, task="noop")).status == "queued"
    finally:
        ctx.close()

    # A table a later migration creates (as the owner) is the application role's to use too,
    # its sequence included, before any grant runs again.
    run_sql(roles.owner_url, "CREATE TABLE later_things (id bigserial PRIMARY KEY, note text)")
    engine = engine_of(roles.app_url)
    try:
        with engine.connect() as connection:
            new_id = connection.scalar(
                text("INSERT INTO later_things (note) VALUES ('hello') RETURNING id")
            )
            assert (
                connection.scalar(
                    text("SELECT note FROM later_things WHERE id = :id"), {"id": new_id}
                )
                == "hello"
            )
    finally:
        engine.dispose()
    assert "must be owner" in refused(roles.app_url, "DROP TABLE later_things")


def test_migrate_says_what_it_cannot_grant(roles: Roles, settings: Settings) -> None:
    # One role for both URLs (development): nothing to grant.
    assert migrate(roles.owner_url, migration_url=roles.owner_url) is None
    # An application role that does not exist.
    ghost = url_as(roles.app_url, f"{roles.app}_ghost", make_url(roles.app_url).database or "")
    with pytest.raises(
        DatabaseNotReady, match=f"role '{roles.app}_ghost' of DATABASE_URL does not exist"
    ):
        migrate(ghost, migration_url=roles.owner_url)
    # Tables another role owns (created before the roles were split) cannot be granted by the
    # owner role: migrate names them rather than leave the API to fail on its first query.
    legacy = f"{make_url(roles.app_url).database}_legacy"
    superuser = url_as(settings.database_url, "postgres", legacy)
    migrate(superuser)
    run_sql(superuser, f"GRANT SELECT, UPDATE ON alembic_version TO {roles.owner}")
    with pytest.raises(
        DatabaseNotReady,
        match=(
            "cannot be granted the tables alembic_version, api_keys, audit_events, "
            "bulk_operations, job_attempts, job_stats, jobs, schedules, stats_marks:"
        ),
    ):
        migrate(
            url_as(roles.app_url, roles.app, legacy),
            migration_url=url_as(roles.app_url, roles.owner, legacy),
        )


def test_the_application_role_enqueues_in_its_transactions_and_others_only_through_sql(
    roles: Roles,
) -> None:
    from app.enqueue import enqueue

    assert migrate(roles.app_url, migration_url=roles.owner_url) == roles.app
    engine = engine_of(roles.app_url)
    try:
        with engine.connect() as connection:
            done = enqueue(connection, "acme", "noop")  # autocommit: committed at once
            by_sql = connection.execute(
                text("SELECT job_id FROM jobfleet.enqueue('acme', 'noop')")
            ).scalar_one()
            assert {done.job.id, by_sql} == set(
                connection.scalars(text("SELECT id FROM jobs")).all()
            )
    finally:
        engine.dispose()
    # A role of another application, granted only the function: it enqueues, it reads nothing.
    shop = f"{roles.app}_shop"
    superuser = url_as(roles.owner_url, "postgres", make_url(roles.owner_url).database or "")
    run_sql(superuser, f"CREATE ROLE {shop} LOGIN")
    try:
        shop_url = url_as(roles.app_url, shop, make_url(roles.app_url).database or "")
        assert "permission denied for schema jobfleet" in refused(
            shop_url, "SELECT * FROM jobfleet.enqueue('acme', 'noop')"
        )
        run_sql(
            roles.owner_url,
            f"GRANT USAGE ON SCHEMA jobfleet TO {shop}",
            f"GRANT EXECUTE ON FUNCTION jobfleet.enqueue TO {shop}",
        )
        run_sql(shop_url, "SELECT * FROM jobfleet.enqueue('acme', 'noop', '{\"n\": 1}')")
        assert "permission denied for table jobs" in refused(shop_url, "SELECT * FROM jobs")
    finally:
        run_sql(
            superuser,
            f"DROP OWNED BY {shop}",
            f"DROP ROLE {shop}",
        )
