"""A real Prometheus (Debian's `prometheus`), configured from docker/prometheus/prometheus.yml,
scrapes a live API (on its metrics port, without a key) and a live fleet that ran real jobs:
every expression of every Grafana panel returns data, every alert expression evaluates, every
rule group loads healthy, and every metric they name is one the app exports.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from app.services.context import Context
from app.settings import Settings
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
