"""The compose files validate against the Compose schema (tests/data/compose-spec.json), agree
with the app (settings names, commands, ports, mounted files) and with Prometheus, and are safe
by default: `docker-compose config` refuses them without each secret, no port is published
beyond 127.0.0.1 unless asked, no password has a default, every service is bounded (logs, memory,
CPU) and stops no sooner than its process drains. The Postgres init script makes the owner and
app roles on a real Postgres, and the app role cannot change the schema."""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import json
import os
import re
import shlex
import stat
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import psycopg2
import pytest
import yaml
from psycopg2 import errors

from app.api.lease import LeaseRequest
from app.api.serve import STOP_SECONDS
from app.cli import _parser
from app.services import connections
from app.settings import Settings
from devtools.binaries import find_postgres_bin_dir
from devtools.postgres_server import PrivatePostgres
from tests.docker_files import (
    COMPOSE,
    COMPOSE_SECRETS_SCRIPT,
    COMPOSE_TEST,
    INTERPOLATION,
    POSTGRES_ROLES_SCRIPT,
    PROMETHEUS_YML,
    docker_compose,
    load_yaml,
    with_defaults,
)
from tests.helpers import ROOT

COMPOSE_SCHEMA = ROOT / "tests" / "data" / "compose-spec.json"
APP_SERVICES = ("migrate", "api", "worker")
THIRD_PARTY = ("postgres", "redis", "prometheus", "alertmanager", "grafana")
# Variables and settings that carry a password or a secret (a database URL holds one).
SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|DATABASE_URL")
# user:password@ in a URL: a credential written in the file (PASSWORD is a placeholder).
CREDENTIAL_IN_URL = re.compile(r"://[^/\s:@]+:(?!PASSWORD@)[^/\s@]+@")


def strings_of(node: Any) -> Iterator[str]:
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for key, value in node.items():
            yield from strings_of(key)
            yield from strings_of(value)
    elif isinstance(node, list):
        for item in node:
            yield from strings_of(item)


def test_compose_files_validate_against_the_compose_schema() -> None:
    schema = json.loads(COMPOSE_SCHEMA.read_text())
    # The schema names draft 2019-09 (under an address jsonschema does not know by heart).
    assert "2019-09" in schema["$schema"]
    jsonschema.Draft201909Validator.check_schema(schema)
    validator = jsonschema.Draft201909Validator(schema)
    for path in (COMPOSE, COMPOSE_TEST):
        document = load_yaml(path)
        errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(document)]
        assert not errors, f"{path.name}: {errors}"
        # Interpolations are ${NAME}, ${NAME:-default}, ${NAME:?message} (or $$ for a dollar).
        for value in strings_of(document):
            for match in re.finditer(r"\$(\$|\{[^}]*\}|\w*)", value):
                assert re.fullmatch(r"\$|\{[A-Z][A-Z0-9_]*(:?[-?][^}]*)?\}", match[1]), value

    # The validator does reject what Compose rejects.
    broken = load_yaml(COMPOSE)
    broken["services"]["api"]["depends_on"]["migrate"]["condition"] = "service_finished"
    broken["services"]["worker"]["replica"] = 2
    assert len(list(validator.iter_errors(broken))) >= 2


def subcommands() -> set[str]:
    for action in _parser()._actions:
        if isinstance(action, argparse._SubParsersAction):
            return set(action.choices)
    raise AssertionError("python -m app has no subcommands")


def command_of(service: dict[str, Any]) -> list[str]:
    command = service["command"]
    return shlex.split(command) if isinstance(command, str) else list(command)


def container_port(mapping: str | int) -> int:
    return int(str(mapping).rsplit(":", 1)[-1].split("/")[0])


def secret_files(service: dict[str, Any]) -> set[str]:
    """Where the service's Docker secrets are mounted."""
    names = [s if isinstance(s, str) else s.get("target", s["source"]) for s in service["secrets"]]
    return {f"/run/secrets/{name}" for name in names}


def test_compose_agrees_with_the_app_and_prometheus() -> None:
    services = load_yaml(COMPOSE)["services"]
    settings = {name.upper() for name in Settings.model_fields}
    defaults = Settings.model_fields

    for name in APP_SERVICES:
        service = services[name]
        assert service["build"] == {"context": "..", "dockerfile": "docker/Dockerfile"}
        assert (COMPOSE.parent / service["build"]["context"]).resolve() == ROOT
        environment = service["environment"]
        # A setting, or NAME_FILE: the setting NAME read from a file (a Docker secret).
        unknown = {
            v for v in environment if v not in settings and v[: -len("_FILE")] not in settings
        }
        assert not unknown, f"{name}: not Jobfleet settings: {sorted(unknown)}"
        assert environment["ENVIRONMENT"] == "production"
        for variable, value in environment.items():
            if variable.endswith("_FILE"):
                assert variable[: -len("_FILE")] not in environment, f"{name}: {variable} twice"
                assert value in secret_files(service), f"{name}: {variable} is no secret of it"
        assert command_of(service)[0] in subcommands(), f"{name}: {service['command']}"
        _parser().parse_args(command_of(service))  # exits (fails the test) on a bad argument
        assert "container_name" not in service
    assert [command_of(services[n])[0] for n in APP_SERVICES] == ["migrate", "api", "worker"]
    # Only the API hashes keys: the fleet and the migrations run without the secret.
    key_secret = {"API_KEY_SECRET", "API_KEY_SECRET_FILE"}
    holders = {n for n in APP_SERVICES if key_secret & set(services[n]["environment"])}
    assert holders == {"api"}
    assert all("api_key_secret" not in secret_files(services[n]) for n in ("migrate", "worker")), (
        "a service that does not hash keys is given the secret"
    )
    # migrate connects as the owner; the API and the fleet as the app role.
    assert services["migrate"]["environment"]["MIGRATION_DATABASE_URL_FILE"]
    for name in ("api", "worker"):
        assert "MIGRATION_DATABASE_URL_FILE" not in services[name]["environment"]
        assert "/run/secrets/migration_database_url" not in secret_files(services[name])
        assert services[name]["environment"]["DATABASE_URL_FILE"] == "/run/secrets/database_url"

    def setting(service: str, name: str) -> int:
        value = services[service]["environment"].get(name.upper())
        return int(with_defaults(value)) if value is not None else int(defaults[name].default)

    api_port = setting("api", "api_port")
    assert [container_port(p) for p in services["api"]["ports"]] == [api_port]
    assert services["api"]["environment"]["API_HOST"] == "0.0.0.0"
    # The API's /metrics keeps its default (a key needed); its metrics port is only exposed to
    # the compose network, where Prometheus scrapes it.
    assert "METRICS_PUBLIC" not in services["api"]["environment"]
    api_metrics_port = setting("api", "api_metrics_port")
    assert api_metrics_port and api_metrics_port != api_port
    assert [int(p) for p in services["api"]["expose"]] == [api_metrics_port]
    assert services["api"]["environment"]["API_METRICS_HOST"] == "0.0.0.0"

    # Workers scale: no host ports, the metrics port only exposed to the network.
    worker = services["worker"]
    fleet_port = setting("worker", "fleet_metrics_port")
    assert "ports" not in worker
    assert [int(p) for p in worker["expose"]] == [fleet_port]
    assert worker["environment"]["FLEET_METRICS_HOST"] == "0.0.0.0"

    # Prometheus scrapes every replica of those services on those ports.
    scraped = {
        (name, sd["port"])
        for job in load_yaml(PROMETHEUS_YML)["scrape_configs"]
        for sd in job.get("dns_sd_configs", [])
        for name in sd["names"]
    }
    assert scraped == {("api", api_metrics_port), ("worker", fleet_port)}

    # Stores: AOF Redis, health-checked; files mounted from the repository exist; every named
    # volume is declared.
    assert "--appendonly" in services["redis"]["command"]
    assert "yes" in services["redis"]["command"]
    declared = set(load_yaml(COMPOSE)["volumes"])
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (COMPOSE.parent / source).exists(), f"{name} mounts missing {source}"
            else:
                assert source in declared, f"{name}: undeclared volume {source}"
    assert {"postgres", "redis"} <= {n for n, s in services.items() if "healthcheck" in s}


def test_the_stack_starts_in_order_gated_on_health() -> None:
    services = load_yaml(COMPOSE)["services"]
    # pg_isready over TCP: the image's temporary init server listens on its socket only.
    check = services["postgres"]["healthcheck"]["test"]
    assert check[:2] == ["CMD", "pg_isready"] and "--host=127.0.0.1" in check
    # migrate waits for Postgres itself too (a restart between the check and its connection).
    wait = _parser().parse_args(command_of(services["migrate"])).wait
    assert wait >= 60
    assert services["migrate"]["restart"] == "no"
    assert services["migrate"]["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    for name in ("api", "worker"):
        assert services[name]["depends_on"] == {
            "migrate": {"condition": "service_completed_successfully"},
            "redis": {"condition": "service_healthy"},
        }
    # Every dependency waits on a condition, and a health condition on a service with a check.
    for name, service in services.items():
        for needed, how in service.get("depends_on", {}).items():
            assert isinstance(how, dict), f"{name} depends on {needed} without a condition"
            if how["condition"] == "service_healthy":
                healthcheck = services[needed].get("healthcheck", {})
                assert healthcheck.get("test") and not healthcheck.get("disable"), needed
            else:
                assert (needed, how["condition"]) == ("migrate", "service_completed_successfully")
    # The monitoring does not wait for Jobfleet: it must see it down.
    for name in ("prometheus", "alertmanager", "grafana"):
        assert not set(services[name].get("depends_on", {})) & {*APP_SERVICES, "postgres"}


def test_no_port_is_published_beyond_loopback_and_no_secret_has_a_default() -> None:
    for path in (COMPOSE, COMPOSE_TEST):
        document = load_yaml(path)
        for name, service in document["services"].items():
            for port in service.get("ports", []):
                # HOST_IP:HOST_PORT:CONTAINER_PORT, the address from BIND_ADDR (loopback
                # unless set).
                assert isinstance(port, str) and port.startswith("${BIND_ADDR:-127.0.0.1}:"), port
                assert with_defaults(port).split(":")[0] == "127.0.0.1", f"{name}: {port}"
        strings = list(strings_of(document))
        for value in strings:
            assert not CREDENTIAL_IN_URL.search(value), f"{path.name}: a credential in {value}"
            for match in INTERPOLATION.finditer(value):
                if SECRET_NAME.search(match["name"]):
                    assert match["op"] == ":?" and match["arg"], f"{path.name}: {match[0]}"
        for service in document["services"].values():
            environment = service.get("environment", {})
            assert "POSTGRES_PASSWORD" not in environment
            assert "GF_SECURITY_ADMIN_PASSWORD" not in environment

    # The stack's secrets: files named by required variables, read by each service through a
    # *_FILE variable, never given in the environment.
    document = load_yaml(COMPOSE)
    for name, secret in document["secrets"].items():
        match = INTERPOLATION.fullmatch(secret["file"])
        assert match and match["op"] == ":?", f"secret {name}: {secret['file']}"
    for name, service in document["services"].items():
        for variable, value in service.get("environment", {}).items():
            if SECRET_NAME.search(variable):
                assert variable.endswith("_FILE"), f"{name}: {variable} is not read from a file"
                assert value in secret_files(service), f"{name}: {variable}={value}"


@pytest.fixture
def compose_secrets(tmp_path: Path) -> Path:
    """An env file naming secret files made by scripts/compose-secrets.sh, as docker/.env would."""
    env_file = tmp_path / "compose.env"
    made = subprocess.run(
        [str(COMPOSE_SECRETS_SCRIPT), "--env-file", str(env_file), str(tmp_path / "secrets")],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    for path in (tmp_path / "secrets").iterdir():
        assert path.read_text() not in made.stdout + made.stderr  # no secret printed
    return env_file


def env_lines(env_file: Path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in env_file.read_text().splitlines() if line)


def test_the_secrets_script_makes_each_secret_once(compose_secrets: Path) -> None:
    directory = compose_secrets.parent / "secrets"
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700  # only its owner enters it
    files = env_lines(compose_secrets)
    required = {m["name"] for m in INTERPOLATION.finditer(COMPOSE.read_text()) if m["op"] == ":?"}
    assert set(files) == required
    values = {}
    for variable, path in files.items():
        secret = Path(path)
        assert secret.parent == directory
        # Readable by the containers' own users (postgres, grafana, jobfleet) through the mount.
        assert stat.S_IMODE(secret.stat().st_mode) == 0o644
        values[variable] = secret.read_text()
        assert len(values[variable]) >= 16
    owner = httpx.URL(values["MIGRATION_DATABASE_URL_FILE"])
    app = httpx.URL(values["DATABASE_URL_FILE"])
    assert (owner.host, owner.port, owner.path) == (app.host, app.port, app.path)
    assert owner.username != app.username and owner.password != app.password
    assert len(set(values.values())) == len(values)

    # Again: every file and line is kept as it is.
    subprocess.run(
        [str(COMPOSE_SECRETS_SCRIPT), "--env-file", str(compose_secrets), str(directory)],
        capture_output=True,
        timeout=30,
        check=True,
    )
    assert env_lines(compose_secrets) == files
    assert {v: Path(p).read_text() for v, p in files.items()} == values


def test_compose_renders_with_its_secrets_and_refuses_without_each(
    compose_secrets: Path, tmp_path: Path
) -> None:
    rendered = docker_compose(COMPOSE, compose_secrets, "config")
    assert rendered.returncode == 0, rendered.stderr
    document = yaml.safe_load(rendered.stdout)
    files = env_lines(compose_secrets)
    assert {s["file"] for s in document["secrets"].values()} == set(files.values())
    published = [str(p) for s in document["services"].values() for p in s.get("ports", [])]
    assert len(published) == 4
    assert all(port.startswith("127.0.0.1:") for port in published), published

    # Published beyond loopback only when asked.
    opened = tmp_path / "opened.env"
    opened.write_text(compose_secrets.read_text() + "BIND_ADDR=0.0.0.0\n")
    rendered = docker_compose(COMPOSE, opened, "config")
    assert rendered.returncode == 0, rendered.stderr
    document = yaml.safe_load(rendered.stdout)
    published = [str(p) for s in document["services"].values() for p in s.get("ports", [])]
    assert all(port.startswith("0.0.0.0:") for port in published), published

    for variable in sorted(files):
        without = tmp_path / f"without-{variable}.env"
        without.write_text("".join(f"{k}={v}\n" for k, v in files.items() if k != variable))
        refused = docker_compose(COMPOSE, without, "config")
        assert refused.returncode != 0, f"rendered without {variable}"
        assert f"set {variable} to a file" in refused.stderr, refused.stderr

    # The test stack needs no secret and publishes on loopback too.
    empty = tmp_path / "empty.env"
    empty.write_text("")
    rendered = docker_compose(COMPOSE_TEST, empty, "config")
    assert rendered.returncode == 0, rendered.stderr
    for service in yaml.safe_load(rendered.stdout)["services"].values():
        assert all(str(p).startswith("127.0.0.1:") for p in service.get("ports", []))


def duration(value: str) -> float:
    """A Compose duration (1m30s, 45s, 500ms) in seconds."""
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", value)
    assert parts and "".join(n + u for n, u in parts) == value, value
    return sum(float(n) * units[u] for n, u in parts)


def memory(value: str) -> int:
    number, unit = re.fullmatch(r"(\d+)([kmg]?)b?", value.lower()).groups()  # type: ignore[union-attr]
    return int(number) * 1024 ** " kmg".index(unit or " ")


def test_the_monitoring_is_closed_by_default() -> None:
    services = load_yaml(COMPOSE)["services"]
    # Anyone who reaches Prometheus's port could otherwise POST /-/quit.
    prometheus = services["prometheus"]
    assert not [flag for flag in prometheus["command"] if "lifecycle" in flag]
    assert "--config.file=/etc/prometheus/prometheus.yml" in prometheus["command"]

    grafana = services["grafana"]["environment"]
    assert grafana["GF_AUTH_ANONYMOUS_ENABLED"] == "false"
    assert grafana["GF_USERS_ALLOW_SIGN_UP"] == "false"
    assert grafana["GF_SECURITY_ADMIN_PASSWORD__FILE"] in secret_files(services["grafana"])

    alertmanager = services["alertmanager"]
    mounts = {v.split(":")[1]: v for v in alertmanager["volumes"]}
    assert mounts["/etc/alertmanager"] == "./alertmanager:/etc/alertmanager:ro"
    assert "--config.file=/etc/alertmanager/alertmanager.yml" in alertmanager["command"]
    assert [with_defaults(p) for p in alertmanager["ports"]] == ["127.0.0.1:9093:9093"]
    targets = [
        target
        for config in load_yaml(PROMETHEUS_YML).get("alerting", {}).get("alertmanagers", [])
        for static in config.get("static_configs", [])
        for target in static["targets"]
    ]
    assert targets == ["alertmanager:9093"], "Prometheus does not send alerts to Alertmanager"


def test_every_service_is_bounded_and_pinned() -> None:
    document = load_yaml(COMPOSE)
    services = document["services"]
    for name, service in services.items():
        logging = service["logging"]
        assert logging["driver"] == "json-file", name
        assert memory(logging["options"]["max-size"]) <= 100 * 1024**2, name
        assert 1 <= int(logging["options"]["max-file"]) <= 10, name
        # Docker refuses a CPU limit above the host's CPU count: the defaults fit one CPU.
        assert 0 < float(with_defaults(str(service["cpus"]))) <= 1.0, name
        assert 64 * 1024**2 <= memory(with_defaults(service["mem_limit"])) <= 4 * 1024**3, name
    # Exact versions: Postgres names its releases MAJOR.MINOR, the others MAJOR.MINOR.PATCH.
    for name in THIRD_PARTY:
        image = services[name]["image"]
        version = r"\d+\.\d+" if name == "postgres" else r"v?\d+\.\d+\.\d+"
        assert re.fullmatch(rf"[a-z/]+:{version}(-[a-z]+)?", image), f"{name}: {image}"
    for service in load_yaml(COMPOSE_TEST)["services"].values():
        assert re.fullmatch(r"[a-z/]+:\d+\.\d+(\.\d+)?(-[a-z]+)*", service["image"]), service
        assert service["logging"]["driver"] == "json-file"

    # The multiprocess metrics of the API and the fleet: on a bounded tmpfs, emptied with the
    # container (and by the app at start).
    for name in ("api", "worker"):
        directory = services[name]["environment"]["METRICS_DIR"]
        tmpfs = dict(entry.split(":", 1) for entry in services[name]["tmpfs"])
        assert "size=" in tmpfs[directory], name

    # Data outlives `docker compose down -v`: every named volume is external, under a fixed name.
    for name, volume in document["volumes"].items():
        assert volume["external"] is True and volume["name"].startswith("jobfleet-"), name
    header = COMPOSE.read_text().split("\n\n", 1)[0]
    assert re.search(
        r"for volume in ([a-z ]+); do\s+#\s+docker volume create \"jobfleet-\$volume\"", header
    )
    listed = re.search(r"for volume in ([a-z ]+);", header)[1].split()  # type: ignore[index]
    assert {f"jobfleet-{v}" for v in listed} == {v["name"] for v in document["volumes"].values()}


def test_stops_outlast_the_drains() -> None:
    services = load_yaml(COMPOSE)["services"]
    # The API: its 30 s drain, in which a lease long poll of up to 30 s may still be running.
    limits = LeaseRequest.model_fields["wait_seconds"].metadata
    longest_poll = next(limit.le for limit in limits if hasattr(limit, "le"))
    assert duration(services["api"]["stop_grace_period"]) >= STOP_SECONDS + longest_poll
    # The fleet: SHUTDOWN_GRACE_SECONDS for running jobs, then the manager kills and exits.
    grace = float(services["worker"]["environment"]["SHUTDOWN_GRACE_SECONDS"])
    assert duration(services["worker"]["stop_grace_period"]) >= grace + 10
    assert duration(services["postgres"]["stop_grace_period"]) >= 30


def test_postgres_takes_the_connections_of_the_stack_and_of_its_documented_scaling() -> None:
    """max_connections against the sizing formula (docs/OPERATIONS.md, "Sizing Postgres
    connections"), with the settings the compose file gives when nothing is set."""
    services = load_yaml(COMPOSE)["services"]
    command = services["postgres"]["command"]
    flags = dict(command[i + 1].split("=", 1) for i, word in enumerate(command) if word == "-c")
    max_connections = int(with_defaults(flags["max_connections"]))
    given = {**services["api"]["environment"], **services["worker"]["environment"]}
    settings = Settings(
        **{
            name: with_defaults(given[name.upper()])
            for name in (
                "api_workers",
                "db_pool_size",
                "db_max_overflow",
                "worker_processes",
                "worker_threads",
            )
            if name.upper() in given
        }
    )
    reserved = 3  # superuser_reserved_connections
    assert connections.deployment(settings, api_replicas=1, fleet_replicas=1) == 51
    # The headroom docs/OPERATIONS.md promises, with room left for a few sessions by hand.
    for api_replicas, fleet_replicas in ((1, 9), (5, 1)):
        total = connections.deployment(settings, api_replicas, fleet_replicas)
        assert total + reserved + 5 <= max_connections, (api_replicas, fleet_replicas)


def test_the_test_compose_file_is_isolated() -> None:
    document = load_yaml(COMPOSE_TEST)
    services = document["services"]
    assert "volumes" not in document
    for name in ("postgres", "redis"):
        service = services[name]
        assert "volumes" not in service and service["tmpfs"], name
        published = {int(with_defaults(p).split(":")[1]) for p in service["ports"]}
        assert not published & {5432, 6379}, f"{name} takes a development port"
    check = services["postgres"]["healthcheck"]["test"]
    assert check[:2] == ["CMD", "pg_isready"] and "--host=127.0.0.1" in check
    tests = services["tests"]
    assert [*tests["entrypoint"], *tests["command"]][0] == "./scripts/test.sh"
    environment = tests["environment"]
    assert httpx.URL(environment["REDIS_URL"]).host == "redis"
    assert "@postgres:5432/" in environment["DATABASE_URL"]
    assert set(environment) <= {name.upper() for name in Settings.model_fields}
    for name in ("postgres", "redis"):
        assert tests["depends_on"][name]["condition"] == "service_healthy"


# The Postgres init script, run by a real Postgres.


def scram_matches(verifier: str, password: str) -> bool:
    """Whether a SCRAM-SHA-256 verifier (pg_authid.rolpassword) was made from `password`."""
    method, iterations_salt, keys = verifier.split("$")
    assert method == "SCRAM-SHA-256"
    iterations, salt = iterations_salt.split(":")
    stored_key = base64.b64decode(keys.split(":")[0])
    salted = hashlib.pbkdf2_hmac(
        "sha256", password.encode(), base64.b64decode(salt), int(iterations)
    )
    client_key = hmac.new(salted, b"Client Key", "sha256").digest()
    return hashlib.sha256(client_key).digest() == stored_key


def run_roles_script(secrets: Path, port: int) -> subprocess.CompletedProcess[str]:
    """The init script as the image runs it: the URL files of `secrets` as Docker secrets, the
    superuser postgres, the server on `port` (the image's own is on its socket)."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    environment.update(
        # psql of the server's own version (15 or later: the script uses \getenv).
        PATH=f"{find_postgres_bin_dir()}{os.pathsep}{environment['PATH']}",
        PGHOST="127.0.0.1",
        PGPORT=str(port),
        POSTGRES_USER="postgres",
        MIGRATION_DATABASE_URL_FILE=str(secrets / "migration_database_url"),
        DATABASE_URL_FILE=str(secrets / "database_url"),
    )
    return subprocess.run(
        [str(POSTGRES_ROLES_SCRIPT)],
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def write_urls(secrets: Path, owner_url: str, app_url: str) -> None:
    secrets.mkdir(exist_ok=True)
    (secrets / "migration_database_url").write_text(owner_url + "\n")
    (secrets / "database_url").write_text(app_url + "\n")


@dataclass
class RolesServer:
    server: PrivatePostgres
    secrets: Path

    def run_script(self, owner_url: str, app_url: str) -> subprocess.CompletedProcess[str]:
        write_urls(self.secrets, owner_url, app_url)
        return run_roles_script(self.secrets, self.server.port)

    def connect(self, user: str, database: str = "jobfleet") -> Any:
        # The private server trusts every local connection: the passwords are checked apart.
        connection = psycopg2.connect(
            host="127.0.0.1", port=self.server.port, user=user, dbname=database
        )
        connection.autocommit = True
        return connection

    def query(self, sql: str, *args: Any, database: str = "postgres") -> list[tuple[Any, ...]]:
        connection = self.connect("postgres", database)
        try:
            with connection.cursor() as cursor:
                cursor.execute(sql, args)
                return cursor.fetchall() if cursor.description else []
        finally:
            connection.close()


@pytest.fixture
def roles_server(private_postgres: PrivatePostgres, tmp_path: Path) -> RolesServer:
    server = RolesServer(private_postgres, tmp_path / "secrets")
    # As the image makes it from POSTGRES_DB, with a table of an earlier stack's, owned by the
    # superuser.
    server.query("CREATE DATABASE jobfleet")
    server.query("CREATE TABLE legacy (id bigserial PRIMARY KEY)", database="jobfleet")
    return server


OWNER_PASSWORD = "p@ss:w/rd%1 ok"
OWNER_URL = "postgresql+psycopg2://jobfleet_owner:p%40ss%3Aw%2Frd%251%20ok@postgres:5432/jobfleet"


def test_the_init_script_makes_an_owner_and_an_app_role_that_cannot_change_the_schema(
    roles_server: RolesServer,
) -> None:
    server = roles_server
    # Mounted where the image runs it, and runnable as it is.
    volumes = load_yaml(COMPOSE)["services"]["postgres"]["volumes"]
    mounts = {volume.split(":")[1]: volume.split(":")[0] for volume in volumes}
    script = mounts[f"/docker-entrypoint-initdb.d/{POSTGRES_ROLES_SCRIPT.name}"]
    assert (COMPOSE.parent / script).resolve() == POSTGRES_ROLES_SCRIPT
    assert os.access(POSTGRES_ROLES_SCRIPT, os.X_OK)

    app_url = "postgresql+psycopg2://jobfleet_app:app-1@postgres:5432/jobfleet?sslmode=disable"
    made = server.run_script(OWNER_URL, app_url)
    assert made.returncode == 0, made.stderr
    assert "app-1" not in made.stdout + made.stderr and "p@ss" not in made.stdout + made.stderr

    roles = {
        row[0]: row[1:]
        for row in server.query(
            "SELECT rolname, rolcanlogin, rolsuper, rolcreatedb, rolcreaterole, rolpassword"
            " FROM pg_authid WHERE rolname LIKE 'jobfleet%%'"
        )
    }
    assert set(roles) == {"jobfleet_owner", "jobfleet_app"}
    for name, (login, superuser, createdb, createrole, _) in roles.items():
        assert (login, superuser, createdb, createrole) == (True, False, False, False), name
    # Each password is the one in its URL, percent-decoded.
    assert scram_matches(roles["jobfleet_owner"][4], OWNER_PASSWORD)
    assert scram_matches(roles["jobfleet_app"][4], "app-1")
    owner_of_database = "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = %s"
    assert server.query(owner_of_database, "jobfleet") == [("jobfleet_owner",)]
    # The earlier stack's table (and its sequence) now belong to the owner.
    owners = server.query(
        "SELECT relname, pg_get_userbyid(relowner) FROM pg_class WHERE relname LIKE 'legacy%%'"
        " AND relkind IN ('r', 'S')",
        database="jobfleet",
    )
    assert sorted(owners) == [("legacy", "jobfleet_owner"), ("legacy_id_seq", "jobfleet_owner")]

    # The owner makes and drops tables: the migrations.
    owner = server.connect("jobfleet_owner")
    try:
        with owner.cursor() as cursor:
            cursor.execute("CREATE TABLE jobs_next (id int)")
            cursor.execute("DROP TABLE jobs_next")
    finally:
        owner.close()
    # The app role cannot create, drop or alter a table, nor make a temporary one or a schema.
    app = server.connect("jobfleet_app")
    try:
        for statement in (
            "CREATE TABLE mine (id int)",
            "CREATE TEMPORARY TABLE mine (id int)",
            "DROP TABLE legacy",
            "ALTER TABLE legacy ADD COLUMN x int",
            "CREATE SCHEMA mine",
        ):
            with app.cursor() as cursor, pytest.raises(errors.InsufficientPrivilege):
                cursor.execute(statement)
    finally:
        app.close()
    # Nobody else may connect to the database.
    server.query("CREATE ROLE outsider LOGIN")
    with pytest.raises(psycopg2.OperationalError, match="permission denied"):
        server.connect("outsider")

    # Again, with the app's password changed in its URL: applied, the rest unchanged.
    again = server.run_script(OWNER_URL, app_url.replace("app-1", "app-2"))
    assert again.returncode == 0, again.stderr
    password_of = "SELECT rolpassword FROM pg_authid WHERE rolname = %s"
    ((verifier,),) = server.query(password_of, "jobfleet_app")
    assert scram_matches(verifier, "app-2") and not scram_matches(verifier, "app-1")
    ((verifier,),) = server.query(password_of, "jobfleet_owner")
    assert scram_matches(verifier, OWNER_PASSWORD)


def test_migrate_works_as_the_owner_the_init_script_made(roles_server: RolesServer) -> None:
    """The stack's first start on a new volume: the init script, then `migrate` as `migrate`
    runs in Compose (its URLs from the secret files, through *_FILE)."""
    server = roles_server
    port = server.server.port
    owner_url = f"postgresql+psycopg2://jobfleet_owner:owner-pw@127.0.0.1:{port}/jobfleet"
    app_url = f"postgresql+psycopg2://jobfleet_app:app-pw@127.0.0.1:{port}/jobfleet"
    made = server.run_script(owner_url, app_url)
    assert made.returncode == 0, made.stderr
    migrate = load_yaml(COMPOSE)["services"]["migrate"]
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "DATABASE"))}
    environment.update(
        {k: v for k, v in migrate["environment"].items() if not k.endswith("_FILE")},
        LOG_LEVEL="INFO",
        MIGRATION_DATABASE_URL_FILE=str(server.secrets / "migration_database_url"),
        DATABASE_URL_FILE=str(server.secrets / "database_url"),
    )
    migrated = subprocess.run(
        [sys.executable, "-m", "app", *command_of(migrate)],
        env=environment,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert migrated.returncode == 0, migrated.stderr
    # The owner owns every table; the app role may use their rows and change none of them.
    tables = server.query(
        "SELECT tablename, tableowner FROM pg_tables WHERE schemaname = 'public'",
        database="jobfleet",
    )
    assert {"jobs", "job_attempts", "api_keys", "alembic_version"} <= {t for t, _ in tables}
    assert {owner for _, owner in tables} == {"jobfleet_owner"}
    app = server.connect("jobfleet_app")
    try:
        with app.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM jobs")
            assert cursor.fetchone() == (0,)
            cursor.execute(
                "SELECT has_table_privilege('jobs', 'INSERT, UPDATE, DELETE'),"
                " has_table_privilege('jobs', 'TRUNCATE')"
            )
            assert cursor.fetchone() == (True, False)
        with app.cursor() as cursor, pytest.raises(errors.InsufficientPrivilege):
            cursor.execute("ALTER TABLE jobs ADD COLUMN mine int")
    finally:
        app.close()


@pytest.mark.parametrize(
    ("app_url", "message"),
    [
        ("postgresql+psycopg2://jobfleet_app@postgres:5432/jobfleet", "has no USER:PASSWORD"),
        ("postgresql+psycopg2://jobfleet_app:100%@postgres:5432/jobfleet", "must be written %25"),
        ("postgresql+psycopg2://jobfleet_app:pw@postgres:5432/other", "must be the same"),
        ("postgresql+psycopg2://jobfleet_owner:pw@postgres:5432/jobfleet", "a role of its own"),
        ("postgresql+psycopg2://postgres:pw@postgres:5432/jobfleet", "is the superuser"),
        ("postgresql+psycopg2://jobfleet_app:pw@postgres:5432", "names no database"),
    ],
)
def test_the_init_script_refuses_urls_it_cannot_use(
    tmp_path: Path, app_url: str, message: str
) -> None:
    write_urls(tmp_path, OWNER_URL, app_url)
    # Refused before it connects: no server is needed (nothing listens on port 1).
    refused = run_roles_script(tmp_path, 1)
    assert refused.returncode == 1
    assert message in refused.stderr, refused.stderr
    assert "could not connect" not in refused.stderr
    assert "p@ss" not in refused.stderr and "pw" not in refused.stderr.replace("pwd", "")
