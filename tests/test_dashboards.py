"""Grafana's provisioning and the dashboards agree with each other and with the Prometheus
datasource. (The alert rules are checked by tests/test_alerts.py.)
"""

from __future__ import annotations

from pathlib import Path

from tests.docker_files import COMPOSE, DOCKER, PROVISIONING, dashboards, load_yaml, panels_of


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
