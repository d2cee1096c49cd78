"""`python -m app bench` runs end to end (small sizes: speed is measured, never asserted); its
ratios to the peers, and its run without the peers' harness (which lives outside the
repository; the peers themselves are never run here, they take minutes)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from app.settings import Settings
from bench import peers as peers_module
from bench.peers import ratio_table, ratios, read_peers
from tests.helpers import ROOT, settings_env


def test_bench_runs_every_workload_and_writes_its_results(
    settings: Settings, tmp_path: Path
) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "app", "bench", "--quick", "--runs", "1",
         "--only", "ceiling,submit-http,submit-batch,drain-2x2,pickup,dashboard",
         "--out", str(tmp_path), "--local-dir", str(tmp_path / "local")],
        cwd=ROOT, env=settings_env(settings, LOG_LEVEL="WARNING"),
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    (result,) = tmp_path.glob("bench-*.json")
    figures = json.loads(result.read_text())["results"]
    assert set(figures) == {
        "ceiling", "submit-http", "submit-batch", "drain-2x2", "pickup", "dashboard"
    }  # fmt: skip
    drain = figures["drain-2x2"][0]
    assert drain["jobs_per_second"] > 0 and drain["jobs_per_second_total"] > 0
    assert 0 < drain["startup_seconds"] <= drain["first_finish_seconds"]
    pickup = figures["pickup"][0]
    assert pickup["p99_ms"] >= pickup["p50_ms"] > 0
    assert pickup["created_to_claimed_p99_ms"] >= pickup["created_to_claimed_p50_ms"] > 0
    assert "drain-2x2" in done.stdout and "median" in done.stdout
    dashboard = figures["dashboard"][0]
    assert dashboard["payload_one_match_p95_ms"] >= dashboard["payload_one_match_p50_ms"] > 0
    assert dashboard["overview_admin_p50_ms"] > 0 and dashboard["seed_seconds"] > 0


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
    document = {
        "peers": {
            "saq": {"summary": {"w2": {"median": 1250.0}, "w2_total": {"median": 1000.0},
                                "w3_p50": {"median": 1.5}, "w3_p99": {"median": 4.0}},
                    "runs": {"w2": [{"startup_s": 0.3}, {"startup_s": 0.5}, {"error": "x"}]}},
            "dramatiq": {"summary": {"w2": {"median": 1000.0}, "w2_total": {"median": 1200.0},
                                     "w3_p50": {"median": 1.0}, "w3_p99": {"median": 8.0}},
                         "runs": {"w2": [{"startup_s": 0.2}]}},
            "celery-prefork": {"summary": {"w2": None, "w3_p99": {"median": 3.0}}, "runs": {}},
        }
    }  # fmt: skip
    peers = read_peers(document)
    saq = next(peer for peer in peers if peer.label == "saq")
    assert saq.startup_seconds == 0.4  # the median of the runs that have one
    rows = {row.figure: row for row in ratios(results, peers)}

    steady = rows["steady drain"]
    assert (steady.jobfleet, steady.best_peer, steady.peer) == (5000.0, "saq", 1250.0)
    assert steady.ratio == 4.0
    total = rows["drain including the fleet's start-up"]
    assert (total.best_peer, total.ratio) == ("dramatiq", 2500.0 / 1200.0)
    p99 = rows["pickup p99 at 200/s, send to task start"]
    assert (p99.best_peer, p99.peer, p99.ratio) == ("celery-prefork", 3.0, 2.0)
    first_finish = rows["fleet start to first finish"]
    assert (first_finish.best_peer, first_finish.ratio) == ("dramatiq", 0.55 / 0.2)
    claim = rows["fleet start to first claim"]
    assert (claim.jobfleet, claim.best_peer, claim.ratio) == (0.5, None, None)
    assert "4.00x" in ratio_table(list(rows.values()))
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
