"""The stack's first start, without Docker: its processes come up in the order of
docker/docker-compose.yml, with the environment the file gives them, against a Postgres that
starts the way the official image does on a new volume: first a temporary server with TCP
closed while its init scripts create the roles, then the real one.

`migrate --wait` is started before Postgres accepts TCP connections: it waits, then migrates
as the owner role and grants the application role; the API (with its secret from a file) then
answers /ready, and a fleet started with no API secret at all runs a job submitted through it.
Then how the waiting backs off, gives up at its deadline, and stops at once on a refusal.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, pool, text
from sqlalchemy.engine import make_url

from app.cli import main
from app.domain.errors import Unavailable
from app.services.context import Context
from app.settings import Settings
from app.store import admin
from devtools.postgres_server import PrivatePostgres
from devtools.processes import start_app
from devtools.sandbox import delete_keys, with_database
from tests.docker_files import COMPOSE, load_yaml
from tests.helpers import HEAVY, free_port, terminate, wait_until

APP_SERVICES = ("migrate", "api", "worker")
OWNER, APP, DATABASE = "jobfleet_owner", "jobfleet_app", "jobfleet"
# Settings each process gets from this test rather than from the compose file: where the
# stores are (the compose network's names mean nothing here), the secrets (as files, the way
# compose mounts them), and what must not collide with other runs on this machine.
OWN = (
    "DATABASE_URL", "MIGRATION_DATABASE_URL", "REDIS_URL", "API_KEY_SECRET", "KEY_PREFIX",
    "API_HOST", "API_PORT", "API_METRICS_HOST", "API_METRICS_PORT", "FLEET_METRICS_HOST",
    "FLEET_METRICS_PORT", "FLEET_HOST", "METRICS_DIR",
)  # fmt: skip
INTERPOLATION = re.compile(r"\$(?:\$|\{([A-Z][A-Z0-9_]*)(?:(:?[-?])([^}]*))?\})")


def interpolate(value: str, variables: dict[str, str]) -> str:
    """Compose's ${NAME}, ${NAME:-default}, ${NAME-default}, ${NAME:?error}, $$. A required
    variable the test does not give gets a placeholder: the test gives its own value for every
    setting that matters here (OWN)."""

    def one(match: re.Match[str]) -> str:
        if match[0] == "$$":
            return "$"
        name, operator, argument = match[1], match[2] or "", match[3] or ""
        given = variables.get(name)
        if operator.endswith("-"):
            empty_counts = operator.startswith(":")
            return argument if given is None or (empty_counts and not given) else given
        if given is None and operator.endswith("?"):
            return f"required-{name.lower()}"
        return given or ""

    return INTERPOLATION.sub(one, value)


def compose_environment(service: dict[str, Any], variables: dict[str, str]) -> dict[str, str]:
    raw = service.get("environment") or {}
    if isinstance(raw, list):
        raw = dict(item.split("=", 1) if "=" in item else (item, "") for item in raw)
    return {name: interpolate(str(value), variables) for name, value in raw.items()}


def command_of(service: dict[str, Any]) -> list[str]:
    command = service["command"]
    return command.split() if isinstance(command, str) else [str(part) for part in command]


def compose_order(services: dict[str, Any]) -> list[str]:
    """The app services, each after the services it depends on (as compose starts them)."""
    order: list[str] = []
    while len(order) < len(APP_SERVICES):
        ready = [
            name
            for name in APP_SERVICES
            if name not in order
            and all(d in order or d not in APP_SERVICES for d in services[name]["depends_on"])
        ]
        assert ready, f"the app services depend on each other in a cycle: {services}"
        order.extend(ready)
    return order


def write_secret(directory: Path, name: str, value: str) -> str:
    """A secret as compose mounts one: a file of its own, read-only, ending in a newline."""
    directory.mkdir(exist_ok=True)
    path = directory / name
    path.write_text(value + "\n")
    path.chmod(0o400)
    return str(path)


def run_sql(url: str, *statements: str) -> None:
    engine = create_engine(url, poolclass=pool.NullPool, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as connection:
            for statement in statements:
                connection.execute(text(statement))
    finally:
        engine.dispose()


@pytest.fixture
def initialising_postgres() -> Iterator[PrivatePostgres]:
    """A new Postgres in its first seconds: TCP closed, its unix socket open."""
    # Short and outside tmp_path, for the socket's path and for the postgres account.
    directory = Path(tempfile.mkdtemp(prefix="jobfleet-startup-"))
    server = PrivatePostgres(directory / "pg", fast=True, tcp=False)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(directory, ignore_errors=True)


def initialise(server: PrivatePostgres) -> dict[str, str]:
    """What the init scripts do on the temporary server: the two roles, and the database owned
    by the role that migrates (on Postgres 15+ only the database's owner may create tables in
    its `public` schema). Returns the roles' passwords."""
    passwords = {OWNER: uuid.uuid4().hex, APP: uuid.uuid4().hex}
    run_sql(
        server.socket_url,
        f"CREATE ROLE {OWNER} LOGIN PASSWORD '{passwords[OWNER]}'",
        f"CREATE ROLE {APP} LOGIN PASSWORD '{passwords[APP]}'",
        f"CREATE DATABASE {DATABASE} OWNER {OWNER}",
    )
    return passwords


class Stack:
    """The app services of the compose file as processes of this machine: each gets the
    environment the file gives it, with the settings of OWN replaced by this test's."""

    # Only the API and the keys command line hash keys: nobody else gets the secret.
    SECRETS = {
        "migrate": ("DATABASE_URL_FILE", "MIGRATION_DATABASE_URL_FILE"),
        "api": ("DATABASE_URL_FILE", "API_KEY_SECRET_FILE"),
        "worker": ("DATABASE_URL_FILE",),
    }
    # Variables of the shell that runs `docker compose up`: a small fleet, two API workers.
    SHELL = {"WORKER_PROCESSES": "1", "WORKER_THREADS": "2", "API_WORKERS": "2"}

    def __init__(
        self, services: dict[str, Any], server: PrivatePostgres, redis_url: str, tmp_path: Path
    ) -> None:
        self.services = services
        self.server = server
        run = uuid.uuid4().hex[:8]
        self.prefix = f"jfstart{run}"
        self.api_port = free_port()
        self.url = f"http://127.0.0.1:{self.api_port}"
        self.logs = tmp_path / "logs"
        self.logs.mkdir()
        self.processes: dict[str, subprocess.Popen[Any]] = {}
        passwords = initialise(server)
        secrets = tmp_path / "secrets"
        url = f"postgresql+psycopg2://{{}}:{{}}@127.0.0.1:{server.port}/{DATABASE}"
        self.files = {
            "DATABASE_URL_FILE": write_secret(
                secrets, "database_url", url.format(APP, passwords[APP])
            ),
            "MIGRATION_DATABASE_URL_FILE": write_secret(
                secrets, "migration_database_url", url.format(OWNER, passwords[OWNER])
            ),
            "API_KEY_SECRET_FILE": write_secret(secrets, "api_key_secret", uuid.uuid4().hex),
        }
        self.ours = {
            "REDIS_URL": redis_url,
            "KEY_PREFIX": self.prefix,
            "API_HOST": "127.0.0.1",
            "API_PORT": str(self.api_port),
            "API_METRICS_HOST": "127.0.0.1",
            "API_METRICS_PORT": "0",
            "FLEET_METRICS_HOST": "127.0.0.1",
            "FLEET_METRICS_PORT": "0",
            "FLEET_HOST": f"startup-{run}",
            "METRICS_DIR": str(tmp_path / "metrics"),
        }
        # This process's environment without any Jobfleet setting.
        names = {name.upper() for name in Settings.model_fields}
        self.base = {
            name: value
            for name, value in os.environ.items()
            if name.upper().removesuffix("_FILE") not in names
            and name != "PROMETHEUS_MULTIPROC_DIR"
        }

    def environment(self, service: str) -> dict[str, str]:
        given = compose_environment(self.services[service], self.SHELL)
        for name in OWN:
            given.pop(name, None)
            given.pop(f"{name}_FILE", None)
        assert given.get("ENVIRONMENT") == "production", f"{service}: {given}"
        secrets = {name: self.files[name] for name in self.SECRETS[service]}
        return {**self.base, **given, **self.ours, **secrets}

    def start(self, service: str, args: list[str] | None = None) -> subprocess.Popen[Any]:
        args = args or command_of(self.services[service])
        with (self.logs / f"{service}.log").open("w") as log:
            process = start_app(args, self.environment(service), stdout=log, stderr=log)
        self.processes[service] = process
        return process

    def log(self, service: str) -> str:
        return (self.logs / f"{service}.log").read_text(errors="replace")

    def running(self, service: str) -> bool:
        assert self.processes[service].poll() is None, f"{service} exited:\n{self.log(service)}"
        return True

    def stop(self) -> None:
        for process in reversed(self.processes.values()):
            terminate(process, 60)


def bring_up_migrate(stack: Stack) -> None:
    """Started while Postgres still initialises (TCP closed: connections refused), `migrate
    --wait` keeps trying; once the real server is up it migrates and grants."""
    args = command_of(stack.services["migrate"])
    if "--wait" not in args:
        args += ["--wait", "60"]
    migrate = stack.start("migrate", args)
    wait_until(
        lambda: stack.running("migrate") and stack.log("migrate").count("postgres_waiting") >= 2,
        timeout=60,
        what="migrate waiting for postgres",
    )
    # Initialisation done: the temporary server stops, the real one starts with TCP open.
    stack.server.stop()
    stack.server.tcp = True
    stack.server.start()
    wait_until(lambda: migrate.poll() is not None, timeout=90, what="migrate finished")
    assert migrate.returncode == 0, stack.log("migrate")
    assert f"granted role {APP} " in stack.log("migrate")


def bring_up_api(stack: Stack) -> None:
    stack.start("api")

    def ready() -> bool:
        stack.running("api")
        try:
            return httpx.get(f"{stack.url}/ready", timeout=5).status_code == 200
        except httpx.TransportError:
            return False

    wait_until(ready, timeout=60, what="the API ready")


def bring_up_worker(stack: Stack) -> None:
    stack.start("worker")


BRING_UP = {"migrate": bring_up_migrate, "api": bring_up_api, "worker": bring_up_worker}


def run_a_job(stack: Stack) -> dict[str, Any]:
    """A key made with the API's settings, a job submitted through the API and run by the
    fleet (which has no API secret); the job as the API finally shows it."""
    keys = start_app(
        ["keys", "create", "--tenant", "acme", "--scope", "producer"],
        stack.environment("api"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    out, err = keys.communicate(timeout=60)
    assert keys.returncode == 0, err
    headers = {"Authorization": f"Bearer {out.splitlines()[-1]}"}
    job = {"task": "echo", "payload": {"hello": "world"}}
    submitted = httpx.post(f"{stack.url}/jobs", json=job, headers=headers, timeout=10)
    assert submitted.status_code == 201, submitted.text
    job_url = f"{stack.url}/jobs/{submitted.json()['id']}"

    def finished() -> dict[str, Any] | None:
        stack.running("worker")
        reply: dict[str, Any] = httpx.get(job_url, headers=headers, timeout=5).json()
        return reply if reply["status"] in ("completed", "failed") else None

    return wait_until(finished, timeout=60, what="the job finished")


@HEAVY
def test_the_stack_starts_in_compose_order_while_postgres_opens_late(
    settings: Settings, initialising_postgres: PrivatePostgres, tmp_path: Path
) -> None:
    services = load_yaml(COMPOSE)["services"]
    order = compose_order(services)
    assert order[0] == "migrate" and set(order) == set(BRING_UP), order
    stack = Stack(services, initialising_postgres, settings.redis_url, tmp_path)
    try:
        for service in order:
            BRING_UP[service](stack)
        job = run_a_job(stack)
        assert (job["status"], job["result"]) == ("completed", {"hello": "world"}), job
    finally:
        stack.stop()
        ctx = Context(settings)
        delete_keys(ctx.redis.client, stack.prefix)
        ctx.close()


def closed_port_url(settings: Settings) -> str:
    """The suite's server and credentials, on a port where nothing listens."""
    return with_database(settings.database_url, "jobfleet").replace(
        f":{make_url(settings.database_url).port}/", f":{free_port()}/"
    )


def test_waiting_backs_off_and_gives_up_at_its_deadline_naming_the_server(
    settings: Settings,
) -> None:
    url = closed_port_url(settings)
    now = [0.0]
    pauses: list[float] = []

    def pause(seconds: float) -> None:  # time moves only when the waiting pauses
        pauses.append(seconds)
        now[0] += seconds

    with pytest.raises(Unavailable) as error:
        admin.wait_for_server(url, 5, clock=lambda: now[0], pause=pause)
    assert pauses[:6] == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    assert sum(pauses) == pytest.approx(5)  # never past the deadline
    message = error.value.detail
    assert f"Postgres at {admin.where(url)} did not accept a connection within 5 s" in message
    assert "Connection refused" in message


def test_migrate_wait_gives_up_with_exit_1_and_refusals_end_it_at_once(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DATABASE_URL", closed_port_url(settings))
    monkeypatch.setenv("MIGRATION_DATABASE_URL", "")
    assert main(["migrate", "--wait", "0.5"]) == 1
    assert "did not accept a connection within 0.5 s" in capsys.readouterr().err
    # A server that answers and refuses the role: no waiting cures that.
    nobody = make_url(settings.database_url).set(username="no_such_role_anywhere")
    monkeypatch.setenv("DATABASE_URL", nobody.render_as_string(hide_password=False))
    began = time.monotonic()
    assert main(["migrate", "--wait", "60"]) == 1
    assert time.monotonic() - began < 30
    assert 'role "no_such_role_anywhere" does not exist' in capsys.readouterr().err
    # A server that answers: no wait at all.
    monkeypatch.setenv("DATABASE_URL", settings.database_url)
    assert main(["migrate", "--wait", "60"]) == 0
    for bad in ("-1", "soon", "inf"):
        with pytest.raises(SystemExit) as exit_:
            main(["migrate", "--wait", bad])
        assert exit_.value.code == 2
