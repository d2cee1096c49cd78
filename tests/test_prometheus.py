"""A real Prometheus (Debian's `prometheus`), configured from docker/prometheus/prometheus.yml,
scrapes a live API (on its metrics port, without a key), a live fleet that ran real jobs and a
real Alertmanager (Debian's `prometheus-alertmanager`, configured from
docker/alertmanager/alertmanager.yml): every expression of every Grafana panel returns data,
every alert expression evaluates, every rule group loads healthy, every metric they name is
one the app (or Prometheus, or Alertmanager) exports, and the routes the API alerts leave out
are route label values the app uses. Then alerts travel from Prometheus through Alertmanager
to the operator's webhook, with absolute runbook links.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from fastapi import FastAPI

from app.services.context import Context
from app.settings import Settings
from tests.alerting import (
    ALERTMANAGER_YML,
    OPERATIONS_MD,
    amtool,
    enable_operator,
    heading_anchors,
)
from tests.docker_files import (
    ALERTS_YML,
    METRIC_NAME,
    PROMETHEUS_YML,
    alert_rules,
    exported_names,
    grafana_to_promql,
    load_yaml,
    panel_exprs,
)
from tests.fleet_support import statuses, workers_of
from tests.helpers import LiveAPI, free_port, terminate, wait_until


class Prometheus:
    """A real `prometheus` server on a free port, with docker/prometheus/prometheus.yml turned
    into static targets on this machine (the same jobs, rule files, external labels and
    Alertmanagers), by port: `targets` maps each port of the file to an address here."""

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
        for manager in config["alerting"]["alertmanagers"]:
            for static_config in manager["static_configs"]:
                static_config["targets"] = [
                    targets[int(target.rsplit(":", 1)[1])] for target in static_config["targets"]
                ]
        config_file = workdir / "prometheus.yml"
        config_file.write_text(yaml.safe_dump(config))
        self.log = (workdir / "prometheus.log").open("wb")
        self.process = subprocess.Popen(
            [
                "prometheus",
                f"--config.file={config_file}",
                f"--storage.tsdb.path={workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                # Alerts of the first evaluations go out before Alertmanager is found and are
                # dropped; resent after 1 s here rather than Prometheus's 1 min.
                "--rules.alert.resend-delay=1s",
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


class Alertmanager:
    """A real Alertmanager (Debian's `prometheus-alertmanager`) on a free port, alone (no
    cluster port), with the configuration given."""

    def __init__(self, workdir: Path, config: dict[str, Any]) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.workdir = workdir / "alertmanager"
        self.workdir.mkdir()
        self.config_file = self.workdir / "alertmanager.yml"
        self.config_file.write_text(yaml.safe_dump(config))
        self.log = (self.workdir / "alertmanager.log").open("wb")
        self.process = subprocess.Popen(
            [
                "prometheus-alertmanager",
                f"--config.file={self.config_file}",
                f"--storage.path={self.workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--cluster.listen-address=",
                "--log.level=warn",
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        wait_until(self._ready, timeout=30, interval=0.1)

    def _ready(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"alertmanager exited: {self.logs()}")
        try:
            return httpx.get(f"{self.url}/-/ready", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    def logs(self) -> str:
        self.log.flush()
        return (self.workdir / "alertmanager.log").read_text()[-3000:]

    def stop(self) -> None:
        terminate(self.process)
        self.log.close()


class Webhook:
    """The operator's receiver: an HTTP endpoint on a free port that keeps every JSON body
    posted to it (Alertmanager's webhook payloads)."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        bodies = self.bodies

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers["Content-Length"])
                bodies.append(json.loads(self.rfile.read(length)))
                self.send_response(200)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass  # quiet: pytest shows the assertions

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/alerts"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def alerts(self) -> list[dict[str, Any]]:
        return [alert for body in list(self.bodies) for alert in body["alerts"]]

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


@pytest.fixture
def alertmanager(tmp_path: Path) -> Iterator[Callable[[dict[str, Any]], Alertmanager]]:
    started: list[Alertmanager] = []

    def start(config: dict[str, Any]) -> Alertmanager:
        server = Alertmanager(tmp_path, config)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def webhook() -> Iterator[Webhook]:
    receiver = Webhook()
    yield receiver
    receiver.stop()


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
    alertmanager: Callable[[dict[str, Any]], Alertmanager],
    app: FastAPI,
) -> None:
    live_api, api_metrics_port = metrics_api
    fleet_port = free_port()
    # The API's /metrics wants a key; Prometheus scrapes its metrics port instead.
    assert httpx.get(f"{live_api.url}/metrics", timeout=5).status_code == 401
    # Probes, and a path no route matches: the traffic the API alerts leave out.
    assert httpx.get(f"{live_api.url}/health", timeout=5).status_code == 200
    assert httpx.get(f"{live_api.url}/ready", timeout=5).status_code == 200
    assert httpx.get(f"{live_api.url}/wp-login.php", timeout=5).status_code == 404
    manager = alertmanager(load_yaml(ALERTMANAGER_YML))  # as shipped: alerts go nowhere
    server = prometheus(
        {
            9101: f"127.0.0.1:{api_metrics_port}",
            9100: f"127.0.0.1:{fleet_port}",
            9093: f"127.0.0.1:{manager.port}",
        }
    )
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
        return {"jobfleet-api", "jobfleet-worker", "alertmanager"} <= set(health) and all(
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

    # The rules about the alerting pipeline name metrics of Prometheus and Alertmanager.
    own = {
        name
        for rule in alert_rules()
        for name in re.findall(r"\b(?:prometheus|alertmanager)_[a-z_]+\b", rule["expr"])
    }
    assert own, "no rule watches Prometheus or Alertmanager"
    reply = server.query('group by (__name__) ({__name__=~"(prometheus|alertmanager)_.+"})')
    served = {series["metric"]["__name__"] for series in reply["data"]["result"]}
    assert own <= served, f"not exported by Prometheus or Alertmanager: {sorted(own - served)}"

    # Every route the API alerts leave out is a route template of the app, or the value the
    # app gives requests no route matched; the probes and that value are scraped as such.
    templates = set(app.openapi()["paths"])  # the route templates the middleware counts
    reply = server.query("group by (route) (jobfleet_http_requests_total)")
    routes = {series["metric"]["route"] for series in reply["data"]["result"]}
    assert {"/health", "/ready", "/metrics", "unmatched"} <= routes, routes
    excluded = {
        alternative
        for rule in alert_rules()
        for pattern in re.findall(r'route!~"([^"]+)"', rule["expr"])
        for alternative in pattern.split("|")
    }
    assert {"/health", "/ready", "/metrics", "unmatched"} <= excluded
    for alternative in excluded:
        assert alternative == "unmatched" or any(
            re.fullmatch(alternative, template) for template in templates
        ), f"{alternative!r} names no route of the app"

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
    assert manager.process.poll() is None, manager.logs()


def test_alerts_reach_the_operator_through_alertmanager(
    prometheus: Callable[[dict[int, str]], Prometheus],
    alertmanager: Callable[[dict[str, Any]], Alertmanager],
    webhook: Webhook,
) -> None:
    # alertmanager.yml after the edit docs/OPERATIONS.md describes, with the webhook pointed
    # here; e-mail left out (no mail server), the first wait shortened, the watchdog routed to
    # the operator as a dead man's switch would be.
    config = yaml.safe_load(enable_operator(ALERTMANAGER_YML.read_text()))
    [operator] = [r for r in config["receivers"] if r["name"] == "operator"]
    del operator["email_configs"]
    [hook] = operator["webhook_configs"]
    hook["url"] = webhook.url
    config["route"]["group_wait"] = "1s"
    [watchdog] = config["route"]["routes"]
    watchdog["receiver"] = "operator"
    manager = alertmanager(config)
    # No Jobfleet process runs: the watchdog is what fires first.
    nowhere = f"127.0.0.1:{free_port()}"
    prometheus({9101: nowhere, 9100: nowhere, 9093: f"127.0.0.1:{manager.port}"})

    external = load_yaml(PROMETHEUS_YML)["global"]["external_labels"]
    anchors = heading_anchors(OPERATIONS_MD.read_text())

    def delivered(alertname: str) -> dict[str, Any] | None:
        found = [a for a in webhook.alerts() if a["labels"]["alertname"] == alertname]
        return found[0] if found else None

    alert = wait_until(lambda: delivered("JobfleetWatchdog"), timeout=30, interval=0.2)
    assert alert["status"] == "firing"
    assert {k: alert["labels"][k] for k in external} == external
    url = alert["annotations"]["runbook_url"]
    assert url == f"{external['runbook_base']}/OPERATIONS.md#jobfleetwatchdog"
    assert url.rsplit("#", 1)[1] in anchors

    # Any other alert takes the main route to the same receiver.
    amtool(
        f"--alertmanager.url={manager.url}",
        "alert",
        "add",
        "alertname=JobfleetFleetMissing",
        "severity=critical",
        "job=jobfleet-worker",
    )
    missing = wait_until(lambda: delivered("JobfleetFleetMissing"), timeout=30, interval=0.2)
    assert missing["labels"]["severity"] == "critical"
    assert manager.process.poll() is None, manager.logs()
