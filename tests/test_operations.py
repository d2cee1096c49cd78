"""The operator artifacts under docker/, checked with real tools.

- promtool accepts prometheus.yml and alerts.yml, and the alert unit tests of
  docker/prometheus/alerts.test.yml pass;
- a real Prometheus (Debian's `prometheus`), configured from docker/prometheus/prometheus.yml,
  scrapes a live API (on its metrics port, without a key) and a live fleet that ran real
  jobs: every expression of every Grafana panel returns data, every alert expression
  evaluates, every rule group loads healthy, and every metric they name is one the app
  exports;
- the fleet's metrics port adds up the counters of all its worker processes;
- the compose files validate against the Compose schema (tests/data/compose-spec.json) and
  agree with the app: settings names, commands, ports, mounted files;
- the Dockerfile, its dockerignore and Grafana's provisioning agree with each other.

promtool and prometheus come from Debian's `prometheus` package (./scripts/test.sh installs it).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from app.cli import _parser
from app.domain.schemas import JobCreate
from app.metrics import Metrics
from app.services import jobs
from app.services.context import Context
from app.services.gauges import FleetGauges
from app.settings import Settings
from tests.fleet_support import PRODUCER, start_fleet, statuses, workers_of
from tests.helpers import ROOT, LiveAPI, free_port, terminate, wait_until

__all__ = ["start_fleet"]

DOCKER = ROOT / "docker"
PROMETHEUS_YML = DOCKER / "prometheus" / "prometheus.yml"
ALERTS_YML = DOCKER / "prometheus" / "alerts.yml"
ALERTS_TEST_YML = DOCKER / "prometheus" / "alerts.test.yml"
DASHBOARDS = DOCKER / "grafana" / "dashboards"
PROVISIONING = DOCKER / "grafana" / "provisioning"
COMPOSE = DOCKER / "docker-compose.yml"
COMPOSE_TEST = DOCKER / "docker-compose-test.yml"
COMPOSE_SCHEMA = ROOT / "tests" / "data" / "compose-spec.json"
APP_SERVICES = ("migrate", "api", "worker")
SEVERITIES = {"critical", "warning", "info"}


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def promtool(*args: str, cwd: Path | None = None) -> str:
    result = subprocess.run(
        ["promtool", *args], capture_output=True, text=True, timeout=60, cwd=cwd, check=False
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"promtool {' '.join(args)} failed:\n{output}"
    return output


# -- dashboards and rules -------------------------------------------------------------------


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


def test_dashboards_are_provisioned_for_the_prometheus_datasource() -> None:
    datasource = load_yaml(PROVISIONING / "datasources" / "prometheus.yml")["datasources"]
    assert [(d["type"], d["uid"]) for d in datasource] == [("prometheus", "prometheus")]
    assert datasource[0]["url"] == "http://prometheus:9090"
    provider = load_yaml(PROVISIONING / "dashboards" / "jobfleet.yml")["providers"][0]
    assert provider["type"] == "file"
    grafana = load_yaml(COMPOSE)["services"]["grafana"]
    mounts = dict(volume.split(":")[:2] for volume in grafana["volumes"])
    assert (DOCKER / "grafana" / "dashboards").resolve() == (
        DOCKER
        / next(host for host, inside in mounts.items() if inside == provider["options"]["path"])
    ).resolve(), "the provider's path is not where compose mounts docker/grafana/dashboards"
    home = grafana["environment"].get("GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH", "")
    assert not home or (
        Path(home).name in dashboards() and str(Path(home).parent) == provider["options"]["path"]
    )

    uids = set()
    for name, dashboard in dashboards().items():
        assert dashboard["uid"] not in uids
        uids.add(dashboard["uid"])
        ids = [panel["id"] for panel in panels_of(dashboard)]
        assert len(ids) == len(set(ids)), f"{name}: panel ids repeat"
        cells: dict[tuple[int, int], str] = {}
        for panel in dashboard["panels"]:  # the top-level grid: panels must not overlap
            grid = panel["gridPos"]
            assert grid["x"] + grid["w"] <= 24, f"{name}: {panel['title']} is wider than the grid"
            for x in range(grid["x"], grid["x"] + grid["w"]):
                for y in range(grid["y"], grid["y"] + grid["h"]):
                    assert (x, y) not in cells, f"{name}: {panel['title']} covers {cells[x, y]}"
                    cells[x, y] = panel["title"]
        for panel in panels_of(dashboard):
            if panel["type"] == "row":
                continue
            assert panel["targets"], f"{name}: {panel['title']} has no query"
            assert panel["datasource"] == {"type": "prometheus", "uid": "prometheus"}
            refs = [target["refId"] for target in panel["targets"]]
            assert len(refs) == len(set(refs)), f"{name}: {panel['title']} repeats a refId"
            for target in panel["targets"]:
                assert target["datasource"] == {"type": "prometheus", "uid": "prometheus"}
                assert target["expr"].strip()


# -- promtool ---------------------------------------------------------------------------------


def test_promtool_accepts_the_config_the_rules_and_their_unit_tests() -> None:
    assert "SUCCESS" in promtool("check", "config", str(PROMETHEUS_YML))
    assert "SUCCESS" in promtool("check", "rules", str(ALERTS_YML))
    # Firing and quiet cases of the subtle rules (absent workers, paused queues, ratios).
    promtool("test", "rules", ALERTS_TEST_YML.name, cwd=ALERTS_TEST_YML.parent)

    for rule in alert_rules():
        name = rule["alert"]
        assert re.fullmatch(r"Jobfleet[A-Z]\w+", name)
        assert "for" in rule, f"{name}: no `for`, it would fire on one evaluation"
        assert rule["labels"]["severity"] in SEVERITIES, name
        notes = rule["annotations"]
        assert notes["summary"] and notes["description"], name
        assert notes["runbook"] == f"docs/OPERATIONS.md#{name.lower()}", name


# -- a real Prometheus -----------------------------------------------------------------------


class Prometheus:
    """A real `prometheus` server on a free port, with docker/prometheus/prometheus.yml turned
    into static targets on this machine (the same jobs, rule files and relabelling)."""

    def __init__(self, workdir: Path, targets: dict[int, str]) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        targets = {**targets, 9090: f"127.0.0.1:{self.port}"}
        config = load_yaml(PROMETHEUS_YML)
        config["global"].update(scrape_interval="1s", scrape_timeout="1s", evaluation_interval="1s")
        for rule_file in config["rule_files"]:
            shutil.copy(PROMETHEUS_YML.parent / rule_file, workdir / rule_file)
        for job in config["scrape_configs"]:
            static = [
                target
                for static_config in job.pop("static_configs", [])
                for target in static_config["targets"]
            ]
            ports = [int(target.rsplit(":", 1)[1]) for target in static]
            ports += [sd["port"] for sd in job.pop("dns_sd_configs", [])]
            assert ports, f"job {job['job_name']}: no target this test knows how to replace"
            job["static_configs"] = [{"targets": [targets[port] for port in ports]}]
        config_file = workdir / "prometheus.yml"
        config_file.write_text(yaml.safe_dump(config))
        self.log = (workdir / "prometheus.log").open("wb")
        self.process = subprocess.Popen(
            [
                "prometheus",
                f"--config.file={config_file}",
                f"--storage.tsdb.path={workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--log.level=warn",
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        self.workdir = workdir
        wait_until(self._ready, timeout=30, interval=0.1)

    def _ready(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"prometheus exited: {self.logs()}")
        try:
            return httpx.get(f"{self.url}/-/ready", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    def logs(self) -> str:
        self.log.flush()
        return (self.workdir / "prometheus.log").read_text()[-3000:]

    def get(self, path: str, **params: str) -> Any:
        reply = httpx.get(f"{self.url}{path}", params=params, timeout=10)
        body = reply.json()
        assert reply.status_code in (200, 400, 422), reply.text
        return body

    def query(self, promql: str) -> Any:
        return self.get("/api/v1/query", query=promql)

    def stop(self) -> None:
        terminate(self.process)
        self.log.close()


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[Callable[[dict[int, str]], Prometheus]]:
    started: list[Prometheus] = []

    def start(targets: dict[int, str]) -> Prometheus:
        server = Prometheus(tmp_path, targets)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def post(api: LiveAPI, path: str, headers: dict[str, str], body: Any = None) -> Any:
    reply = httpx.post(f"{api.url}{path}", json=body, headers=headers, timeout=30)
    assert reply.status_code < 300, reply.text
    return reply.json()


def finished(ctx: Context, expected: dict[str, int]) -> bool:
    counts = statuses(ctx)
    return all(counts.get(status, 0) == n for status, n in expected.items())


@pytest.fixture
def metrics_api(settings: Settings) -> Iterator[tuple[LiveAPI, int]]:
    """A live API (two worker processes) with its metrics port, and that port."""
    port = free_port()
    api = LiveAPI(settings, API_WORKERS="2", API_METRICS_PORT=str(port))
    yield api, port
    api.stop()


@pytest.mark.live
def test_every_panel_and_alert_evaluates_on_a_real_prometheus(
    ctx: Context,
    metrics_api: tuple[LiveAPI, int],
    producer: dict[str, str],
    start_fleet: Any,
    prometheus: Callable[[dict[int, str]], Prometheus],
) -> None:
    live_api, api_metrics_port = metrics_api
    fleet_port = free_port()
    # The API's /metrics wants a key; Prometheus scrapes its metrics port instead.
    assert httpx.get(f"{live_api.url}/metrics", timeout=5).status_code == 401
    server = prometheus({9101: f"127.0.0.1:{api_metrics_port}", 9100: f"127.0.0.1:{fleet_port}"})
    fleet = start_fleet(
        processes=2,
        threads=2,
        FLEET_METRICS_PORT=str(fleet_port),
        FLEET_METRICS_HOST="127.0.0.1",
        RETRY_BASE="1.01",
        RETRY_CAP="0.1",
    )

    # A job whose worker process dies under it: recovered, then dead-lettered (no retries).
    victim = post(live_api, "/jobs", producer, {"task": "sleep", "payload": {"seconds": 60},
                                                "max_retries": 0})["id"]  # fmt: skip
    holder = wait_until(
        lambda: [w for w in workers_of(ctx, fleet.host) if victim in w["current_jobs"]],
        timeout=30,
    )[0]
    os.kill(holder["pid"], signal.SIGKILL)
    # Completed, failed for good, retried, cancelled: every lifecycle counter moves.
    batch = (
        [{"task": "noop"}] * 20
        + [{"task": "echo", "payload": {"n": n}} for n in range(10)]
        + [{"task": "fail", "max_retries": 0}] * 3
        + [{"task": "flaky", "payload": {"failures": 1}, "max_retries": 2}] * 3
        + [{"task": "noop", "delay_seconds": 3600}]
    )
    reply = post(live_api, "/jobs/batch", producer, {"jobs": batch})
    assert reply["created"] == len(batch)
    post(live_api, f"/jobs/{reply['results'][-1]['id']}/cancel", producer)
    wait_until(
        lambda: finished(ctx, {"completed": 33, "failed": 4, "cancelled": 1}),
        timeout=30,
        interval=0.1,
    )

    def targets_up() -> bool:
        active = server.get("/api/v1/targets")["data"]["activeTargets"]
        health = {t["labels"]["job"]: t["health"] for t in active}
        return {"jobfleet-api", "jobfleet-worker"} <= set(health) and all(
            h == "up" for h in health.values()
        )

    wait_until(targets_up, timeout=20, interval=0.2)

    # Every metric the dashboards and alerts name is one the app exports, and is scraped.
    named = {
        name
        for expr in [e for _, e in panel_exprs()] + [r["expr"] for r in alert_rules()]
        for name in METRIC_NAME.findall(expr)
    }
    unknown = named - exported_names(ctx)
    assert not unknown, f"metrics that Jobfleet does not export: {sorted(unknown)}"

    def scraped() -> set[str]:
        reply = server.query('group by (__name__) ({__name__=~"jobfleet_.+|up"})')
        return {series["metric"]["__name__"] for series in reply["data"]["result"]}

    wait_until(lambda: named <= scraped(), timeout=20, interval=0.2)

    # Every panel expression parses and returns data (polled: rates need two scrapes).
    pending = dict(panel_exprs())
    deadline = time.monotonic() + 20
    while pending:
        for where, expr in list(pending.items()):
            reply = server.query(grafana_to_promql(expr))
            assert reply["status"] == "success", f"{where}: {expr}\n{reply.get('error')}"
            if reply["data"]["result"]:
                del pending[where]
        if pending and time.monotonic() > deadline:
            raise AssertionError(f"panels without data: {json.dumps(pending, indent=1)}")
        if pending:
            time.sleep(0.25)

    # Every alert expression evaluates without error (firing is not expected).
    for rule in alert_rules():
        reply = server.query(rule["expr"])
        assert reply["status"] == "success", f"{rule['alert']}: {reply.get('error')}"

    # The rule groups are loaded and their rules evaluate cleanly.
    wanted = {group["name"] for group in load_yaml(ALERTS_YML)["groups"]}

    def rules_healthy() -> bool:
        groups = server.get("/api/v1/rules")["data"]["groups"]
        rules = [rule for group in groups for rule in group["rules"]]
        errors = [(r["name"], r["lastError"]) for r in rules if r.get("lastError")]
        assert not errors, f"rules failing: {errors}"
        return {g["name"] for g in groups} == wanted and all(r["health"] == "ok" for r in rules)

    wait_until(rules_healthy, timeout=15, interval=0.2)
    assert server.process.poll() is None, server.logs()


# -- the fleet's metrics port ----------------------------------------------------------------


def fleet_samples(port: int) -> dict[str, float]:
    """Every sample of the fleet's /metrics, summed over its labels, by sample name."""
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    totals: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            totals[sample.name] = totals.get(sample.name, 0.0) + sample.value
    return totals


@pytest.mark.live
def test_fleet_metrics_add_up_over_its_worker_processes(ctx: Context, start_fleet: Any) -> None:
    port = free_port()
    fleet = start_fleet(
        processes=3, threads=1, FLEET_METRICS_PORT=str(port), FLEET_METRICS_HOST="127.0.0.1"
    )
    jobs.submit_many(ctx, PRODUCER, [JobCreate(task="noop") for _ in range(300)])

    def counted() -> dict[str, float]:
        samples = fleet_samples(port)
        return samples if samples.get("jobfleet_jobs_completed_total") == 300 else {}

    samples = wait_until(counted, timeout=60, interval=0.1)
    assert samples["jobfleet_job_duration_seconds_count"] == 300
    assert samples["jobfleet_job_wait_seconds_count"] == 300
    assert samples.get("jobfleet_jobs_failed_total", 0) == 0

    # The 300 were run by more than one process: the merged counter is a real sum.
    def processed() -> list[int]:
        counts = [int(w["processed"]) for w in workers_of(ctx, fleet.host)]
        return counts if sum(counts) == 300 else []

    per_process = wait_until(processed, timeout=10, interval=0.1)
    assert len([n for n in per_process if n]) > 1, f"one process ran every job: {per_process}"


# -- compose ---------------------------------------------------------------------------------


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


# -- the image --------------------------------------------------------------------------------


def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of docker/Dockerfile, continuation lines joined."""
    text = re.sub(r"\\\n", " ", (DOCKER / "Dockerfile").read_text())
    lines = [line.strip() for line in text.splitlines()]
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1])
        for line in lines
        if line and not line.startswith("#")
    ]


def ignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parents decides."""

    def regex(pattern: str) -> str:
        out = re.escape(pattern.strip("/"))
        out = out.replace(r"\*\*/", "(.*/)?").replace(r"\*\*", ".*")
        return out.replace(r"\*", "[^/]*").replace(r"\?", "[^/]")

    parts = path.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    verdict = False
    for pattern in patterns:
        negated = pattern.startswith("!")
        body = regex(pattern[1:] if negated else pattern)
        if any(re.fullmatch(body, candidate) for candidate in candidates):
            verdict = not negated
    return verdict


def test_the_image_runs_the_app_unprivileged_with_cached_dependencies() -> None:
    steps = dockerfile()
    assert steps[0] == ("FROM", "python:3.11-slim")
    kinds = [kind for kind, _ in steps]
    copies = [args for kind, args in steps if kind == "COPY"]
    assert copies[0] == "requirements.txt ./"
    install = next(i for i, (kind, args) in enumerate(steps) if "pip install" in args)
    assert "requirements.txt" in steps[install][1] and "requirements-dev" not in steps[install][1]
    assert kinds.index("COPY") < install < kinds.index("COPY", kinds.index("COPY") + 1)
    user = [args for kind, args in steps if kind == "USER"]
    assert user and user[-1] not in ("root", "0")
    assert json.loads(dict(steps)["ENTRYPOINT"]) == ["python", "-m", "app"]
    assert json.loads(dict(steps)["CMD"]) == ["api"]
    environment = " ".join(args for kind, args in steps if kind == "ENV")
    for listener in ("API_HOST", "API_METRICS_HOST", "FLEET_METRICS_HOST"):
        assert f"{listener}=0.0.0.0" in environment
    assert set(re.findall(r"\b([A-Z][A-Z_]+)=", environment)) - {
        "PYTHONDONTWRITEBYTECODE", "PYTHONUNBUFFERED", "PIP_NO_CACHE_DIR",
        "PIP_DISABLE_PIP_VERSION_CHECK",
    } <= {name.upper() for name in Settings.model_fields}  # fmt: skip
    assert "/health" in dict(steps)["HEALTHCHECK"]

    # What the build context lets in: the app and its runtime requirements, nothing private.
    patterns = [
        line.strip()
        for line in (DOCKER / "Dockerfile.dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for source in (args.split()[0] for args in copies):
        assert not ignored(source.rstrip("/"), patterns), f"COPY {source} is ignored"
    for private in (".env", ".git/config", ".venv/bin/python", ".local/demo-key", "tests/x.py",
                    "app/__pycache__/cli.cpython-311.pyc", "requirements-dev.txt"):  # fmt: skip
        assert ignored(private, patterns), f"{private} would be sent to the builder"
    # (Walking the tree, not asking git: the tests also run in a container without git.)
    sources = [
        path.relative_to(ROOT).as_posix()
        for path in (ROOT / "app").rglob("*.py")
        if "__pycache__" not in path.parts
    ]
    assert sources and not [path for path in sources if ignored(path, patterns)]
