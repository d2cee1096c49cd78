"""Backups: scripts/backup.sh dumps a live Jobfleet database and scripts/restore.sh restores the
dump into a fresh database with every job, attempt and key as they were, migrated to this
release; the restored system serves and runs its work (docs/OPERATIONS.md, "Backups and
restores"). Real pg_dump, pg_restore and Postgres throughout."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from app.services import auth, execution, jobs
from app.services.context import Context
from app.settings import Settings
from app.store.admin import alembic_config, drop_database, migrate
from devtools.sandbox import erase, with_database
from tests.conftest import FLEET_HEARTBEATS
from tests.fleet_support import FAST_RETRIES, PRODUCER, burst, submit
from tests.helpers import ROOT, LiveAPI

# Every table of the schema, by its key: a restore must bring back each row as it was.
TABLES = {
    "jobs": "id",
    "job_attempts": "id",
    "api_keys": "id",
    "audit_events": "id",
    "bulk_operations": "id",
    "alembic_version": "version_num",
}


def rows(database_url: str, table: str) -> list[tuple[Any, ...]]:
    engine = create_engine(database_url, poolclass=NullPool)
    try:
        with engine.connect() as connection:
            result = connection.execute(text(f"SELECT * FROM {table} ORDER BY {TABLES[table]}"))
            return [tuple(row) for row in result]
    finally:
        engine.dispose()


def scalar(database_url: str, sql: str) -> Any:
    """The first value of `sql`, committed."""
    engine = create_engine(database_url, poolclass=NullPool)
    try:
        with engine.begin() as connection:
            return connection.scalar(text(sql))
    finally:
        engine.dispose()


def execute(database_url: str, statement: str) -> None:
    """A statement outside a transaction (CREATE DATABASE, roles)."""
    engine = create_engine(database_url, poolclass=NullPool, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as connection:
            connection.execute(text(statement))
    finally:
        engine.dispose()


def statuses(database_url: str) -> dict[str, str]:
    engine = create_engine(database_url, poolclass=NullPool)
    try:
        with engine.connect() as connection:
            result = connection.execute(text("SELECT id::text, status FROM jobs"))
            return {str(job_id): str(status) for job_id, status in result}
    finally:
        engine.dispose()


def script(name: str, *args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """Run scripts/<name> as an operator would (no database variables of the tests' own)."""
    environment = {k: v for k, v in os.environ.items() if "DATABASE_URL" not in k}
    environment.update(APP_PYTHON=sys.executable, **env)
    return subprocess.run(
        [str(ROOT / "scripts" / name), *args],
        cwd=cwd,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )


def backup(database_url: str, dump: Path) -> None:
    done = script("backup.sh", "--url", database_url, "--output", dump.name, cwd=dump.parent)
    assert done.returncode == 0, done.stderr
    assert dump.is_file() and dump.stat().st_mode & 0o077 == 0, "a dump is its owner's only"


def restore(database_url: str, dump: Path, *options: str) -> subprocess.CompletedProcess[str]:
    return script("restore.sh", "--url", database_url, *options, str(dump), cwd=dump.parent)


@pytest.fixture
def fresh_url(settings: Settings) -> Iterator[str]:
    """A database name on the tests' server that nothing has created yet; dropped at the end."""
    name = f"{make_url(settings.database_url).database}_restored_{uuid.uuid4().hex[:6]}"
    url = with_database(settings.database_url, name)
    yield url
    drop_database(url)


def test_a_dump_of_a_live_system_restores_every_job_attempt_and_key_and_runs(
    settings: Settings, ctx: Context, fresh_url: str, tmp_path: Path
) -> None:
    # A history: completed jobs, dead-lettered ones (two failed attempts each), scheduled and
    # cancelled ones, jobs waiting in a queue no fleet serves, and one running.
    _, key = auth.create_key(ctx, "acme", [auth.Scope.PRODUCER])
    done = [submit(ctx, priority=i % 3) for i in range(20)]
    dead = [submit(ctx, task="fail", max_retries=1) for _ in range(3)]
    later = [submit(ctx, task="noop", delay_seconds=3600) for _ in range(2)]
    jobs.cancel(ctx, PRODUCER, uuid.UUID(later[0]))
    waiting = [submit(ctx, queue="later") for _ in range(3)]
    assert burst(settings, processes=1, threads=2, **FAST_RETRIES) == 0
    running = submit(ctx, queue="held")
    # Its worker is never heard of again: a short lease, as a host lost at the dump would leave.
    assert execution.claim(ctx, [running], "lost-host:1:1", lease=1.0)
    source = {table: rows(settings.database_url, table) for table in TABLES}
    assert len(source["jobs"]) == 29 and len(source["job_attempts"]) == 26

    dump = tmp_path / "jobfleet.dump"
    backup(settings.database_url, dump)
    after_dump = submit(ctx)  # committed after the snapshot: not in the dump

    restored = restore(fresh_url, dump)
    assert restored.returncode == 0, restored.stderr
    assert "29 jobs, 26 attempts" in restored.stdout
    for table in TABLES:
        assert rows(fresh_url, table) == source[table], f"{table} differs after the restore"
    assert after_dump not in {str(row[0]) for row in rows(fresh_url, "jobs")}
    # New attempts continue the numbering instead of colliding with restored ones.
    last_attempt = "SELECT last_value FROM job_attempts_id_seq"
    assert scalar(fresh_url, last_attempt) == scalar(settings.database_url, last_attempt)

    # The restored system, with a Redis of its own that holds nothing yet: the API is ready and
    # serves the restored jobs to the key made before the dump.
    on_restored = settings.model_copy(
        update={"database_url": fresh_url, "key_prefix": f"{settings.key_prefix}r"}
    )
    api = LiveAPI(on_restored, API_WORKERS="1")
    try:
        assert httpx.get(f"{api.url}/ready", timeout=10).status_code == 200
        reply = httpx.get(
            f"{api.url}/jobs/{dead[0]}", headers={"Authorization": f"Bearer {key}"}, timeout=10
        )
        assert reply.status_code == 200, reply.text
        job = reply.json()
        assert job["status"] == "failed" and job["attempts"] == 2
        assert [h["outcome"] for h in job["history"]] == ["failed", "failed"]
    finally:
        api.stop()
    try:
        # A fleet runs the waiting jobs (the reconciler fills the empty Redis from Postgres)
        # and the job that was running at the dump: its lease has expired, so recovery takes
        # it as a lost attempt and it runs again.
        queues = "default,later,held"
        options = {**FLEET_HEARTBEATS, **FAST_RETRIES}
        assert burst(on_restored, processes=1, threads=2, queues=queues, **options) == 0
        status = statuses(fresh_url)
        assert {status[i] for i in [*done, *waiting, running]} == {"completed"}
        assert [status[i] for i in later] == ["cancelled", "scheduled"]
        history = scalar(
            fresh_url,
            f"SELECT string_agg(outcome, ',' ORDER BY attempt) FROM job_attempts "
            f"WHERE job_id = '{running}'",
        )
        assert history == "lost,completed"
    finally:
        erase(on_restored)


def test_a_database_that_holds_tables_is_replaced_only_when_asked(
    settings: Settings, ctx: Context, fresh_url: str, tmp_path: Path
) -> None:
    submit(ctx)
    dump = tmp_path / "jobfleet.dump"
    backup(settings.database_url, dump)
    assert restore(fresh_url, dump).returncode == 0
    # Work done on the restored database since: a second restore must not silently undo it.
    execute(fresh_url, "UPDATE jobs SET status = 'cancelled'")
    changed = rows(fresh_url, "jobs")

    refused = restore(fresh_url, dump)
    assert refused.returncode == 1 and "is not empty" in refused.stderr
    assert "--replace" in refused.stderr
    assert rows(fresh_url, "jobs") == changed

    replaced = restore(fresh_url, dump, "--replace")
    assert replaced.returncode == 0, replaced.stderr
    assert rows(fresh_url, "jobs") == rows(settings.database_url, "jobs") != changed


def test_a_dump_of_an_older_release_is_migrated_after_the_restore(
    settings: Settings, fresh_url: str, tmp_path: Path
) -> None:
    older = with_database(settings.database_url, f"{make_url(fresh_url).database}_old")
    migrate(older, "0002")
    on_older = settings.model_copy(
        update={"database_url": older, "key_prefix": f"{settings.key_prefix}o"}
    )
    context = Context(on_older)
    try:
        job_id = submit(context, task="noop")
        backup(older, tmp_path / "old.dump")
        job = rows(older, "jobs")
    finally:
        context.close()
        erase(on_older)

    restored = restore(fresh_url, tmp_path / "old.dump")
    assert restored.returncode == 0, restored.stderr
    assert "schema revision 0002" in restored.stdout
    head = ScriptDirectory.from_config(alembic_config(fresh_url)).get_current_head()
    assert rows(fresh_url, "alembic_version") == [(head,)] and head != "0002"
    assert rows(fresh_url, "jobs") == job and str(job[0][0]) == job_id


def test_a_file_that_is_no_dump_or_no_jobfleet_database_is_refused(
    settings: Settings, fresh_url: str, tmp_path: Path
) -> None:
    wrong = tmp_path / "postgres.dump"
    done = script(
        "backup.sh",
        "--url",
        with_database(settings.database_url, "postgres"),
        "-o",
        wrong.name,
        cwd=tmp_path,
    )
    assert done.returncode == 1 and "no jobs table" in done.stderr
    assert not wrong.exists() and not list(tmp_path.iterdir()), "a failed dump left a file"

    garbage = tmp_path / "garbage.dump"
    garbage.write_bytes(b"not a dump\n")
    refused = restore(fresh_url, garbage)
    assert refused.returncode == 1 and "cannot be read" in refused.stderr
    exists = f"SELECT count(*) FROM pg_database WHERE datname = '{make_url(fresh_url).database}'"
    assert scalar(settings.database_url, exists) == 0, "a database was made for nothing"

    # The server's own databases hold no tables, and are no place for a restore all the same.
    backup(settings.database_url, tmp_path / "jobfleet.dump")
    for database in ("postgres", "template1"):
        server_own = restore(with_database(fresh_url, database), tmp_path / "jobfleet.dump")
        assert server_own.returncode == 1 and "of the server itself" in server_own.stderr


def url_as(database_url: str, user: str, database: str) -> str:
    return (
        make_url(database_url)
        .set(username=user, password=None, database=database)
        .render_as_string(hide_password=False)
    )


@pytest.fixture
def roles(settings: Settings) -> Iterator[tuple[str, str]]:
    """An owner role that may not create databases and a login-only app role, as the Compose
    stack makes them; dropped at the end (after the databases of the test)."""
    run = uuid.uuid4().hex[:8]
    owner, app = f"jf_backup_owner_{run}", f"jf_backup_app_{run}"
    superuser = url_as(settings.database_url, "postgres", "postgres")
    execute(superuser, f"CREATE ROLE {owner} LOGIN NOCREATEDB")
    execute(superuser, f"CREATE ROLE {app} LOGIN")
    yield owner, app
    execute(superuser, f"DROP ROLE {app}")
    execute(superuser, f"DROP ROLE {owner}")


def test_a_restore_keeps_the_two_roles_and_migrates_as_the_configured_owner(
    settings: Settings, roles: tuple[str, str], fresh_url: str, tmp_path: Path
) -> None:
    owner, app = roles
    name = f"{make_url(fresh_url).database}_src"
    owner_url, app_url = url_as(fresh_url, owner, name), url_as(fresh_url, app, name)
    superuser = url_as(fresh_url, "postgres", "postgres")
    execute(superuser, f"CREATE DATABASE {name} OWNER {owner}")
    on_source = settings.model_copy(
        update={"database_url": app_url, "key_prefix": f"{settings.key_prefix}s"}
    )
    configured = {"MIGRATION_DATABASE_URL": owner_url, "DATABASE_URL": app_url}
    try:
        migrate(app_url, migration_url=owner_url)
        context = Context(on_source)
        try:
            submit(context, task="noop")  # as the app role
        finally:
            context.close()
        # The configured owner dumps; no URL given.
        dumped = script("backup.sh", "-o", "roles.dump", cwd=tmp_path, **configured)
        assert dumped.returncode == 0, dumped.stderr
        # The owner may not create the fresh database: refused before anything is touched.
        fresh = make_url(fresh_url).database or ""
        refused = restore(url_as(fresh_url, owner, fresh), tmp_path / "roles.dump")
        assert refused.returncode == 1 and "may not create databases" in refused.stderr

        restored = script(
            "restore.sh", "--url", superuser, "--database", fresh, "roles.dump",
            cwd=tmp_path, **configured,
        )  # fmt: skip
        assert restored.returncode == 0, restored.stderr
        assert rows(fresh_url, "jobs") == rows(url_as(fresh_url, "postgres", name), "jobs")
        # As the source was: the owner's database and tables; the app role granted the rows,
        # not the schema (migrate ran as the configured owner, pointed at the restored copy).
        assert (
            scalar(
                fresh_url,
                "SELECT pg_get_userbyid(datdba) || ' ' || (SELECT tableowner FROM pg_tables "
                "WHERE tablename = 'jobs') FROM pg_database WHERE datname = current_database()",
            )
            == f"{owner} {owner}"
        )
        assert f"granted role {app}" in restored.stdout
        assert scalar(
            fresh_url,
            f"SELECT has_table_privilege('{app}', 'jobs', 'INSERT') "
            f"AND NOT has_schema_privilege('{app}', 'public', 'CREATE')",
        )
    finally:
        drop_database(url_as(fresh_url, "postgres", name))
        erase(on_source.model_copy(update={"database_url": url_as(fresh_url, "postgres", name)}))


# Stands in for the Docker CLI, which has no engine to talk to here: `compose ... exec -T
# postgres CMD...` runs CMD on this machine as the postgres service would (its POSTGRES_USER,
# its server), so the scripts' commands for the compose stack run for real against Postgres.
DOCKER = """#!/bin/sh
printf '%s\\n' "$*" >>"$DOCKER_LOG"
[ "$1" = compose ] || exit 64
[ "$2" = version ] && exit 0
[ "$2" = -f ] && [ -f "$3" ] || exit 64
[ "$4" = exec ] && [ "$5" = -T ] && [ "$6" = postgres ] || exit 64
shift 6
exec env POSTGRES_USER="$STACK_USER" PGHOST="$STACK_HOST" PGPORT="$STACK_PORT" "$@"
"""


def test_the_compose_stack_is_backed_up_and_restored_inside_its_postgres_service(
    settings: Settings, ctx: Context, fresh_url: str, tmp_path: Path
) -> None:
    submit(ctx)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "docker").write_text(DOCKER)
    (bin_dir / "docker").chmod(0o755)
    server = make_url(settings.database_url)
    stack = {
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "DOCKER_LOG": str(tmp_path / "docker.log"),
        "STACK_USER": server.username or "postgres",
        "STACK_HOST": server.host or "127.0.0.1",
        "STACK_PORT": str(server.port or 5432),
    }
    database, fresh = server.database or "", make_url(fresh_url).database or ""

    dumped = script(
        "backup.sh", "--compose", "--database", database, "-o", "stack.dump", cwd=tmp_path, **stack
    )
    assert dumped.returncode == 0, dumped.stderr
    restored = script(
        "restore.sh", "--compose", "--database", fresh, "stack.dump", cwd=tmp_path, **stack
    )
    assert restored.returncode == 0, restored.stderr
    assert rows(fresh_url, "jobs") == rows(settings.database_url, "jobs")
    # Every command went through the service, with no terminal (a dump streams through it).
    calls = (tmp_path / "docker.log").read_text().splitlines()
    compose_file = str(ROOT / "docker" / "docker-compose.yml")
    assert calls and all(
        call == "compose version" or call.startswith(f"compose -f {compose_file} exec -T postgres ")
        for call in calls
    )
    # migrate is the stack's service, which works on the stack's own database only.
    assert "not migrated" in restored.stdout
