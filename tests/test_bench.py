"""`python -m app bench` runs end to end (small sizes: speed is measured, never asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from app.settings import Settings
from tests.helpers import HEAVY, ROOT, settings_env


@HEAVY
def test_bench_runs_every_workload_and_writes_its_results(
    settings: Settings, tmp_path: Path
) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "app", "bench", "--quick", "--runs", "1",
         "--only", "ceiling,submit-http,submit-batch,drain-2x2,pickup,enqueue-txn,enqueue-sql,"
         "enqueue-rate,dashboard",
         "--out", str(tmp_path), "--local-dir", str(tmp_path / "local")],
        cwd=ROOT, env=settings_env(settings, LOG_LEVEL="WARNING"),
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    (result,) = tmp_path.glob("bench-*.json")
    figures = json.loads(result.read_text())["results"]
    assert set(figures) == {
        "ceiling", "submit-http", "submit-batch", "drain-2x2", "pickup", "enqueue-txn",
        "enqueue-sql", "enqueue-rate", "dashboard",
    }  # fmt: skip
    assert figures["drain-2x2"][0]["jobs_per_second"] > 0
    assert figures["pickup"][0]["p99_ms"] >= figures["pickup"][0]["p50_ms"] > 0
    for through in ("enqueue-txn", "enqueue-sql"):
        waits = figures[through][0]
        assert waits["max_ms"] >= waits["p99_ms"] >= waits["p50_ms"] > 0 < waits["commit_p50_ms"]
    assert min(figures["enqueue-rate"][0].values()) > 0
    assert "drain-2x2" in done.stdout and "median" in done.stdout
    dashboard = figures["dashboard"][0]
    assert dashboard["payload_one_match_p95_ms"] >= dashboard["payload_one_match_p50_ms"] > 0
    assert dashboard["overview_admin_p50_ms"] > 0 and dashboard["seed_seconds"] > 0


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
