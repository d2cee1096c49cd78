"""The operator artifacts under docker/ as the tests read them: paths, YAML, the dashboards'
panels and their PromQL, the alert rules, promtool, the metric names the app exports, and the
Compose files as Compose reads them (interpolation, `docker-compose config`)."""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from app.metrics import Metrics
from app.services.context import Context
from app.services.gauges import FleetGauges
from tests.helpers import ROOT

DOCKER = ROOT / "docker"
PROMETHEUS_YML = DOCKER / "prometheus" / "prometheus.yml"
ALERTS_YML = DOCKER / "prometheus" / "alerts.yml"
ALERTS_TEST_YML = DOCKER / "prometheus" / "alerts.test.yml"
DASHBOARDS = DOCKER / "grafana" / "dashboards"
PROVISIONING = DOCKER / "grafana" / "provisioning"
COMPOSE = DOCKER / "docker-compose.yml"
COMPOSE_TEST = DOCKER / "docker-compose-test.yml"
POSTGRES_ROLES_SCRIPT = DOCKER / "postgres" / "jobfleet-roles.sh"
COMPOSE_SECRETS_SCRIPT = ROOT / "scripts" / "compose-secrets.sh"

# Compose's interpolation: ${NAME}, ${NAME:-default}, ${NAME-default}, ${NAME:?message}, ...
INTERPOLATION = re.compile(r"\$\{(?P<name>[A-Z][A-Z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}")


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def promtool(*args: str, cwd: Path | None = None) -> str:
    result = subprocess.run(
        ["promtool", *args], capture_output=True, text=True, timeout=60, cwd=cwd, check=False
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"promtool {' '.join(args)} failed:\n{output}"
    return output


def dashboards() -> dict[str, dict[str, Any]]:
    found = {path.name: json.loads(path.read_text()) for path in sorted(DASHBOARDS.glob("*.json"))}
    assert found, f"no dashboard JSON under {DASHBOARDS}"
    return found


def panels_of(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, rows' nested panels included."""
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def panel_exprs() -> list[tuple[str, str]]:
    """(where, PromQL) of every target of every panel of every dashboard."""
    found = []
    for name, dashboard in dashboards().items():
        for panel in panels_of(dashboard):
            for target in panel.get("targets", []):
                found.append((f"{name}: {panel['title']} [{target['refId']}]", target["expr"]))
    return found


def alert_rules() -> list[dict[str, Any]]:
    return [rule for group in load_yaml(ALERTS_YML)["groups"] for rule in group["rules"]]


def grafana_to_promql(expr: str) -> str:
    """What Grafana sends for `expr`: its interval variables as durations, any template
    variable as a match-everything regex."""
    for variable, value in (("__rate_interval", "1m"), ("__interval", "15s"), ("__range", "5m")):
        expr = expr.replace(f"${{{variable}}}", value).replace(f"${variable}", value)
    return re.sub(r"\$\{?\w+\}?", ".*", expr)


METRIC_NAME = re.compile(r"\b(jobfleet_[a-z0-9_]+|up)\b")


def exported_names(ctx: Context) -> set[str]:
    """The sample names the app exports: its counters and histograms (app/metrics.py), the
    scrape-time gauges (app/services/gauges.py, computed now), and Prometheus's own `up`."""
    suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"], "gauge": [""]}
    registry = Metrics().registry  # a registry of its own: outside multiprocess mode
    assert registry is not None
    names = {"up"}
    for family in [*registry.collect(), *FleetGauges(ctx).collect()]:
        names.update(family.name + suffix for suffix in suffixes[family.type])
    return names


def with_defaults(value: str) -> str:
    """`value` as Compose renders it when no variable is set: ${NAME:-default} is its default,
    ${NAME} is empty. A required ${NAME:?message} fails the test."""

    def default(match: re.Match[str]) -> str:
        assert match["op"] in (None, "-", ":-"), f"{match[0]} has no default: it is required"
        return match["arg"] or ""

    return INTERPOLATION.sub(default, value)


def docker_compose(path: Path, env_file: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`docker-compose` (Debian's package, 1.29) on the compose file `path`, with `env_file` in
    place of docker/.env and none of the caller's variables: only what the file says counts."""
    return subprocess.run(
        ["docker-compose", "--env-file", str(env_file), "--file", str(path), *args],
        env={"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/")},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
