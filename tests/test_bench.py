"""`python -m app bench` runs end to end (small sizes: speed is measured, never asserted); its
ratios to the peers, and its run without the peers' harness (which lives outside the
repository; the peers themselves are never run here, they take minutes)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from app.settings import Settings
from bench import peers as peers_module
from bench.peers import ratio_table, ratios, read_peers
from tests.helpers import HEAVY, ROOT, settings_env

# The benchmark measures speed; what it runs of the product is measured by the other tests.
pytestmark = pytest.mark.usefixtures("untraced")


@HEAVY
def test_bench_runs_every_workload_and_writes_its_results(
    settings: Settings, tmp_path: Path
) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "app", "bench", "--quick", "--runs", "1",
         "--only", "ceiling,submit-http,submit-batch,drain-2x2,pickup,enqueue-txn,enqueue-sql,"
         "enqueue-rate,dashboard,defaults",
         "--out", str(tmp_path), "--local-dir", str(tmp_path / "local")],
        cwd=ROOT, env=settings_env(settings, LOG_LEVEL="WARNING"),
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    (result,) = tmp_path.glob("bench-*.json")
    figures = json.loads(result.read_text())["results"]
    assert set(figures) == {
        "ceiling", "submit-http", "submit-batch", "drain-2x2", "pickup", "enqueue-txn",
        "enqueue-sql", "enqueue-rate", "dashboard", "defaults",
    }  # fmt: skip
    drain = figures["drain-2x2"][0]
    assert drain["jobs_per_second"] > 0 and drain["jobs_per_second_total"] > 0
    assert 0 < drain["startup_seconds"] <= drain["first_finish_seconds"]
    pickup = figures["pickup"][0]
    assert pickup["p99_ms"] >= pickup["p50_ms"] > 0
    assert pickup["created_to_claimed_p99_ms"] >= pickup["created_to_claimed_p50_ms"] > 0
    for through in ("enqueue-txn", "enqueue-sql"):
        waits = figures[through][0]
        assert waits["max_ms"] >= waits["p99_ms"] >= waits["p50_ms"] > 0 < waits["commit_p50_ms"]
    assert min(figures["enqueue-rate"][0].values()) > 0
    assert "drain-2x2" in done.stdout and "median" in done.stdout
    dashboard = figures["dashboard"][0]
    assert dashboard["payload_one_match_p95_ms"] >= dashboard["payload_one_match_p50_ms"] > 0
    assert dashboard["overview_admin_p50_ms"] > 0 and dashboard["seed_seconds"] > 0
    # The default-settings stack, loaded by k6: every job submitted was completed (the workload
    # itself checks each once, in Postgres), with the logs a deployment writes.
    defaults = figures["defaults"][0]
    assert defaults["submitted_per_second"] > 0 and defaults["completed_per_second"] > 0
    assert defaults["failed_requests"] == 0
    assert defaults["request_p95_ms"] >= defaults["request_p50_ms"] > 0
    assert defaults["log_lines_per_job"] >= 3  # a request line, created, claimed, completed


def test_the_autovacuum_off_workload_compares_a_churned_table_with_a_fresh_one(
    settings: Settings, tmp_path: Path
) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "app", "bench", "--quick", "--runs", "1",
         "--only", "autovacuum-off", "--out", str(tmp_path),
         "--local-dir", str(tmp_path / "local")],
        cwd=ROOT, env=settings_env(settings, LOG_LEVEL="WARNING"),
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    (result,) = tmp_path.glob("bench-*.json")
    figures = json.loads(result.read_text())["results"]["autovacuum-off"][0]
    # 5,000 jobs churned on a private server without autovacuum: their dead versions stay.
    assert figures["jobs_live_tuples"] >= 5000
    assert figures["jobs_dead_tuples"] >= 2 * figures["jobs_live_tuples"]
    assert figures["fresh_drain_jobs_per_second"] > 0
    assert figures["churned_drain_jobs_per_second"] > 0
    for query in ("recovery_expired", "lease_renewal", "promoter_due", "sweep_lists", "claim"):
        for table in ("fresh", "churned"):
            assert figures[f"{table}_{query}_p95_ms"] >= figures[f"{table}_{query}_p50_ms"] > 0


def test_ratios_compare_each_figure_with_the_best_peer_of_it() -> None:
    """The highest rate or the lowest time among the peers, whichever peer it belongs to;
    Jobfleet's median over its runs; a figure either side lacks has no ratio."""
    results = {
        "drain-2x2": [
            {"jobs_per_second": 4000.0, "jobs_per_second_total": 2000.0,
             "startup_seconds": 0.4, "first_finish_seconds": 0.45},
            {"jobs_per_second": 5000.0, "jobs_per_second_total": 3000.0,
             "startup_seconds": 0.6, "first_finish_seconds": 0.65},
            {"jobs_per_second": 6000.0, "jobs_per_second_total": 2500.0,
             "startup_seconds": 0.5, "first_finish_seconds": 0.55},
        ],
        "pickup": [{"p50_ms": 3.0, "p99_ms": 6.0}],
    }  # fmt: skip

    def peer(w2: list[dict[str, Any]], w3: list[dict[str, Any]]) -> dict[str, Any]:
        return {"runs": {"w2": w2, "w3": w3}, "summary": {"ignored": True}}

    rounds = [
        {"peers": {
            "saq": peer([{"rate": 1250.0, "rate_total": 1000.0, "startup_s": 0.3}],
                        [{"p50": 1.5, "p99": 4.0}]),
            "dramatiq": peer([{"rate": 1000.0, "rate_total": 1200.0, "startup_s": 0.2}],
                             [{"p50": 1.0, "p99": 8.0}]),
            "celery-prefork": peer([{"error": "worker exited"}], [{"p50": 2.0, "p99": 3.0}]),
        }},
        {"peers": {
            "saq": peer([{"rate": 1300.0, "rate_total": 900.0, "startup_s": 0.5}],
                        [{"p50": 9.0, "p99": 90.0, "timeout": True}]),
            "dramatiq": peer([{"rate": 900.0, "rate_total": 1200.0, "startup_s": 0.2}],
                             [{"p50": 1.0, "p99": 8.0}]),
        }},
    ]  # fmt: skip
    peers = read_peers(rounds)
    saq = next(peer for peer in peers if peer.label == "saq")
    # Medians over the rounds' runs; a failed pickup run left out, as the harness does.
    assert (saq.drain, saq.drain_total, saq.startup_seconds) == (1275.0, 950.0, 0.4)
    assert (saq.pickup_p50_ms, saq.pickup_p99_ms) == (1.5, 4.0)
    celery = next(peer for peer in peers if peer.label == "celery-prefork")
    assert (celery.drain, celery.startup_seconds, celery.pickup_p99_ms) == (None, None, 3.0)
    rows = {row.figure: row for row in ratios(results, peers)}

    steady = rows["steady drain"]
    assert (steady.jobfleet, steady.best_peer, steady.peer) == (5000.0, "saq", 1275.0)
    assert steady.ratio == 5000.0 / 1275.0
    total = rows["drain including the fleet's start-up"]
    assert (total.best_peer, total.ratio) == ("dramatiq", 2500.0 / 1200.0)
    p99 = rows["pickup p99 at 200/s, send to task start"]
    assert (p99.best_peer, p99.peer, p99.ratio) == ("celery-prefork", 3.0, 2.0)
    first_finish = rows["fleet start to first finish"]
    assert (first_finish.best_peer, first_finish.ratio) == ("dramatiq", 0.55 / 0.2)
    claim = rows["fleet start to first claim"]
    assert (claim.jobfleet, claim.best_peer, claim.ratio) == (0.5, None, None)
    assert "2.00x" in ratio_table(list(rows.values()))
    # Without Jobfleet's pickup, its rows stay without a ratio.
    no_pickup = {row.figure: row for row in ratios({"drain-2x2": results["drain-2x2"]}, peers)}
    assert no_pickup["pickup p99 at 200/s, send to task start"].ratio is None


def test_peers_without_their_harness_are_skipped_with_a_message(
    settings: Settings, tmp_path: Path
) -> None:
    missing = tmp_path / "nowhere" / "run.sh"
    assert peers_module.missing_harness(missing) is not None
    done = subprocess.run(
        [sys.executable, "-m", "app", "bench", "--quick", "--runs", "1", "--only", "ceiling",
         "--peers", "saq,dramatiq", "--peers-harness", str(missing),
         "--out", str(tmp_path), "--local-dir", str(tmp_path / "local")],
        cwd=ROOT, env=settings_env(settings, LOG_LEVEL="WARNING"),
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert f"peers skipped: no harness at {missing}" in done.stdout
    (result,) = tmp_path.glob("bench-*.json")
    written = json.loads(result.read_text())
    assert set(written["results"]) == {"ceiling"} and "ratios" not in written
    assert written["machine"]["cpus"] and written["machine"]["postgres"]
