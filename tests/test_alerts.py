"""The alerting files: promtool accepts prometheus.yml and alerts.yml and their unit tests pass
(a vanished target, an idle API with two errors, a real error burst, probe traffic...); every
rule has a firing and a quiet case, a severity, and an absolute runbook URL whose anchor
exists in docs/OPERATIONS.md; every service found through DNS has an absent() rule; amtool
accepts alertmanager.yml as shipped (alerts go nowhere) and after the documented edit.

promtool comes from Debian's `prometheus` package and amtool from `prometheus-alertmanager`
(./scripts/test.sh installs both). tests/test_prometheus.py runs them for real.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from tests.alerting import (
    ALERTMANAGER_YML,
    OPERATIONS_MD,
    amtool,
    enable_operator,
    heading_anchors,
)
from tests.docker_files import (
    ALERTS_TEST_YML,
    ALERTS_YML,
    PROMETHEUS_YML,
    alert_rules,
    load_yaml,
    promtool,
)

SEVERITIES = {"critical", "warning", "info"}
# Always fires, from the first evaluation: it has no quiet case and no `for`.
WATCHDOG = "JobfleetWatchdog"


def test_promtool_accepts_the_config_the_rules_and_their_unit_tests() -> None:
    assert "SUCCESS" in promtool("check", "config", str(PROMETHEUS_YML))
    assert "SUCCESS" in promtool("check", "rules", str(ALERTS_YML))
    output = promtool("test", "rules", ALERTS_TEST_YML.name, cwd=ALERTS_TEST_YML.parent)
    assert "SUCCESS" in output


def test_every_rule_has_a_firing_and_a_quiet_unit_test_under_the_real_external_labels() -> None:
    tests = load_yaml(ALERTS_TEST_YML)
    assert tests["rule_files"] == [ALERTS_YML.name]
    external = load_yaml(PROMETHEUS_YML)["global"]["external_labels"]
    firing: set[str] = set()
    quiet: set[str] = set()
    for group in tests["tests"]:
        assert group.get("external_labels") == external, (
            f"{group.get('name')}: test with the external labels of prometheus.yml"
        )
        for case in group.get("alert_rule_test", []):
            (firing if case["exp_alerts"] else quiet).add(case["alertname"])
    names = {rule["alert"] for rule in alert_rules()}
    assert names - firing == set(), "rules without a unit test in which they fire"
    assert names - quiet == {WATCHDOG}, "rules without a unit test in which they stay quiet"
    assert (firing | quiet) <= names, "unit tests of alerts that no rule defines"


def test_the_vanished_target_idle_api_and_error_burst_cases_are_tested() -> None:
    cases = {group["name"]: group for group in load_yaml(ALERTS_TEST_YML)["tests"]}

    def outcomes(name: str, alert: str) -> list[bool]:
        return [
            bool(case["exp_alerts"])
            for case in cases[name]["alert_rule_test"]
            if case["alertname"] == alert
        ]

    vanished = cases["a vanished fleet is missing"]["input_series"]
    assert any(series["values"].endswith("stale") for series in vanished)
    assert True in outcomes("a vanished fleet is missing", "JobfleetFleetMissing")
    assert True in outcomes("a vanished API target is missing", "JobfleetApiMissing")
    assert outcomes("an idle API with two errors", "JobfleetApiErrorRate") == [False] * 3
    assert outcomes("an API under probe and scrape traffic only", "JobfleetApiErrorRate") == [False]
    assert outcomes("an API error burst", "JobfleetApiErrorRate") == [False, True]


def test_every_rule_carries_a_severity_a_text_and_an_absolute_runbook_url() -> None:
    anchors = heading_anchors(OPERATIONS_MD.read_text())
    base = load_yaml(PROMETHEUS_YML)["global"]["external_labels"]["runbook_base"]
    parts = urlsplit(base)
    assert parts.scheme in ("http", "https") and parts.netloc, f"runbook_base {base!r}"
    assert not base.endswith("/"), "runbook_base takes no trailing slash"

    for rule in alert_rules():
        name = rule["alert"]
        assert re.fullmatch(r"Jobfleet[A-Z]\w+", name)
        if name == WATCHDOG:
            assert rule["labels"]["severity"] == "none"
        else:
            assert "for" in rule, f"{name}: no `for`, it would fire on one evaluation"
            assert rule["labels"]["severity"] in SEVERITIES, name
        notes = rule["annotations"]
        assert set(notes) == {"summary", "description", "runbook_url"}, name
        assert notes["summary"] and notes["description"], name
        anchor = name.lower()
        assert notes["runbook_url"] == (
            "{{ $externalLabels.runbook_base }}/OPERATIONS.md#" + anchor
        ), name
        assert anchor in anchors, f"{name}: docs/OPERATIONS.md has no section #{anchor}"


def test_every_service_found_through_dns_has_an_absent_rule() -> None:
    # A static target that fails keeps its `up` series (at 0): JobfleetTargetDown sees it. A
    # service found through DNS that has no container left has no series at all.
    config = load_yaml(PROMETHEUS_YML)
    exprs = [" ".join(rule["expr"].split()) for rule in alert_rules()]
    down = next(rule for rule in alert_rules() if rule["alert"] == "JobfleetTargetDown")
    assert down["expr"].strip() == "up == 0", "JobfleetTargetDown should watch every job"
    for job in config["scrape_configs"]:
        if "dns_sd_configs" in job:
            wanted = f'absent(up{{job="{job["job_name"]}"}})'
            assert any(wanted in expr for expr in exprs), f"no rule with {wanted}"
        else:
            assert set(job) <= {"job_name", "static_configs", "metrics_path"}, job


def test_prometheus_sends_alerts_to_the_alertmanager_it_scrapes() -> None:
    config = load_yaml(PROMETHEUS_YML)
    [manager] = config["alerting"]["alertmanagers"]
    [static] = manager["static_configs"]
    assert static["targets"] == ["alertmanager:9093"]
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert jobs["alertmanager"]["static_configs"] == [{"targets": ["alertmanager:9093"]}]


def test_alertmanager_sends_nowhere_until_the_operator_says_where(tmp_path: Path) -> None:
    assert "SUCCESS" in amtool("check-config", str(ALERTMANAGER_YML))
    shipped = load_yaml(ALERTMANAGER_YML)
    assert shipped["route"]["receiver"] == "null"
    assert shipped["receivers"] == [{"name": "null"}], "the default receiver must send nothing"
    route = shipped["route"]
    assert route["group_by"] == ["alertname", "queue"]
    assert route["repeat_interval"] == "4h"
    watchdog = route["routes"][0]
    assert watchdog["matchers"] == [f'alertname="{WATCHDOG}"']
    assert watchdog["receiver"] == "null"

    # The edit docs/OPERATIONS.md describes: a webhook and an e-mail receiver that amtool takes.
    edited = tmp_path / "alertmanager.yml"
    edited.write_text(enable_operator(ALERTMANAGER_YML.read_text()))
    assert "SUCCESS" in amtool("check-config", str(edited))
    config: dict[str, Any] = yaml.safe_load(edited.read_text())
    assert config["route"]["receiver"] == "operator"
    operator = next(r for r in config["receivers"] if r["name"] == "operator")
    assert [c["send_resolved"] for c in operator["webhook_configs"]] == [True]
    assert [c["to"] for c in operator["email_configs"]] == ["oncall@example.com"]


def test_the_runbooks_are_the_rules_and_their_links_resolve() -> None:
    text = OPERATIONS_MD.read_text()
    start = text.index("\n## Alerts and runbooks\n")
    section = text[start : text.index("\n## ", start + 1)]
    runbooks = re.findall(r"^### (Jobfleet\w+)$", section, flags=re.MULTILINE)
    assert sorted(runbooks) == sorted(rule["alert"] for rule in alert_rules())
    anchors = heading_anchors(text)
    links = re.findall(r"\]\(#([^)]+)\)", section)
    assert links and set(links) <= anchors, set(links) - anchors
    # The alerts routed to nowhere, the edit that routes them, and the one place of the base.
    assert "docker/alertmanager/alertmanager.yml" in section and "runbook_base" in section
