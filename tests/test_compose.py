"""The compose files validate against the Compose schema (tests/data/compose-spec.json) and
agree with the app (settings names, commands, ports, mounted files) and with Prometheus."""

from __future__ import annotations

import argparse
import json
import re
import shlex
from collections.abc import Iterator
from typing import Any

import httpx
import jsonschema

from app.cli import _parser
from app.settings import Settings
from tests.docker_files import COMPOSE, COMPOSE_TEST, PROMETHEUS_YML, load_yaml
from tests.helpers import ROOT

COMPOSE_SCHEMA = ROOT / "tests" / "data" / "compose-spec.json"
APP_SERVICES = ("migrate", "api", "worker")


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


def test_compose_agrees_with_the_app_and_prometheus() -> None:
    services = load_yaml(COMPOSE)["services"]
    settings = {name.upper() for name in Settings.model_fields}
    defaults = Settings.model_fields

    for name in APP_SERVICES:
        service = services[name]
        assert service["build"] == {"context": "..", "dockerfile": "docker/Dockerfile"}
        assert (COMPOSE.parent / service["build"]["context"]).resolve() == ROOT
        unknown = set(service["environment"]) - settings
        assert not unknown, f"{name}: not Jobfleet settings: {sorted(unknown)}"
        assert service["environment"]["ENVIRONMENT"] == "production"
        assert "API_KEY_SECRET" in service["environment"]
        assert command_of(service)[0] in subcommands(), f"{name}: {service['command']}"
        assert "container_name" not in service
    assert [command_of(services[n])[0] for n in APP_SERVICES] == ["migrate", "api", "worker"]

    def setting(service: str, name: str) -> int:
        value = services[service]["environment"].get(name.upper())
        return int(value) if value is not None else int(defaults[name].default)

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
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    for name in ("api", "worker"):
        depends = services[name]["depends_on"]
        assert depends["migrate"]["condition"] == "service_completed_successfully"
        assert depends["redis"]["condition"] == "service_healthy"

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

    # Stores: AOF Redis, health-checked, on named volumes.
    assert "--appendonly" in services["redis"]["command"]
    assert "yes" in services["redis"]["command"]
    declared = set(load_yaml(COMPOSE)["volumes"])
    for name in ("postgres", "redis", "prometheus", "grafana"):
        service = services[name]
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (COMPOSE.parent / source).exists(), f"{name} mounts missing {source}"
            else:
                assert source in declared, f"{name}: undeclared volume {source}"
    assert {"postgres", "redis"} <= {n for n, s in services.items() if "healthcheck" in s}


def test_the_test_compose_file_is_isolated() -> None:
    document = load_yaml(COMPOSE_TEST)
    services = document["services"]
    assert "volumes" not in document
    for name in ("postgres", "redis"):
        service = services[name]
        assert "volumes" not in service and service["tmpfs"], name
        published = {int(str(p).split(":")[0]) for p in service["ports"]}
        assert not published & {5432, 6379}, f"{name} takes a development port"
    tests = services["tests"]
    assert [*tests["entrypoint"], *tests["command"]][0] == "./scripts/test.sh"
    environment = tests["environment"]
    assert httpx.URL(environment["REDIS_URL"]).host == "redis"
    assert "@postgres:5432/" in environment["DATABASE_URL"]
    assert set(environment) <= {name.upper() for name in Settings.model_fields}
    for name in ("postgres", "redis"):
        assert tests["depends_on"][name]["condition"] == "service_healthy"
