"""The k6 load profiles (tests/load/, via scripts/loadtest.sh) against a real `python -m app dev`.

A short smoke run must pass every threshold and really complete jobs; the same profile with a
wrong key must fail on its thresholds (k6 exits 99), so a green run means something; and the
script refuses to start when no API answers.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from app.services.context import Context
from app.settings import Settings
from tests.helpers import HEAVY, ROOT, LiveDev, free_port

pytestmark = pytest.mark.live

LOADTEST = ROOT / "scripts" / "loadtest.sh"
K6_THRESHOLDS_CROSSED = 99
# Knobs of tests/load/common.js and k6's own K6_* options: the runs here set what they need.
TUNABLES = (
    "DURATION", "SCALE", "TASK", "QUEUE", "THINK_TIME", "POLL_MIN", "POLL_MAX", "POLL_TIMEOUT",
    "MAX_POLLS", "HTTP_P95_MS", "E2E_P95_MS", "FAILED_JOBS_RATE",
)  # fmt: skip


def loadtest(profile: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {
        name: value
        for name, value in os.environ.items()
        if name not in TUNABLES and not name.startswith("K6_")
    }
    return subprocess.run(
        [str(LOADTEST), profile, "--quiet", "--no-color"],
        cwd=ROOT,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_help_exits_0_and_usage_errors_exit_2() -> None:
    def script(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(LOADTEST), *args], cwd=ROOT, capture_output=True, text=True, timeout=60
        )

    for flag in ("--help", "-h"):
        helped = script(flag)
        assert helped.returncode == 0, flag
        assert helped.stdout.startswith("usage: ") and "JOBFLEET_KEY" in helped.stdout
        assert helped.stderr == ""
    for args, error in (((), "name a profile"), (("smok",), "unknown profile smok")):
        refused = script(*args)
        assert refused.returncode == 2, args
        assert refused.stdout == ""
        assert refused.stderr.startswith(f"error: {error}\nusage: "), refused.stderr


def crossed(metric: dict[str, Any]) -> dict[str, bool]:
    """A metric's thresholds in k6's exported summary, each true when it was crossed."""
    return dict(metric["thresholds"])


@HEAVY
@pytest.mark.usefixtures("untraced")
def test_smoke_profile_passes_and_its_thresholds_catch_a_broken_run(
    settings: Settings, ctx: Context, tmp_path: Path
) -> None:
    dev = LiveDev(settings, tmp_path / "local")
    try:
        base, keys = dev.url, [dev.key]

        # A short smoke run: every threshold holds, and the jobs really ran.
        summary = tmp_path / "smoke.json"
        run = loadtest(
            "smoke", BASE_URL=base, JOBFLEET_KEY=keys[0], DURATION="6s", SUMMARY_EXPORT=str(summary)
        )
        assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
        metrics = json.loads(summary.read_text())["metrics"]
        assert metrics["checks"]["value"] == 1
        assert metrics["checks"]["fails"] == 0
        assert metrics["http_req_failed"]["value"] == 0
        assert metrics["jobs_failed"]["value"] == 0
        completed = metrics["jobs_completed"]["count"]
        assert completed > 0
        assert metrics["job_e2e_latency"]["count"] == completed
        assert 0 < metrics["job_e2e_latency"]["p(95)"] < 2000
        for name in ("checks", "http_req_failed", "http_req_duration", "job_e2e_latency"):
            assert crossed(metrics[name]), name
            assert not any(crossed(metrics[name]).values()), name
        with ctx.db.transaction() as session:
            statuses = dict(
                session.execute(text("SELECT status, count(*) FROM jobs GROUP BY status")).all()
            )
        assert statuses == {"completed": completed}

        # The same profile with a key the API refuses: every request but /health is a 401.
        wrong_summary = tmp_path / "wrong-key.json"
        wrong = loadtest(
            "smoke",
            BASE_URL=base,
            JOBFLEET_KEY="jf_not-a-key-of-this-api",
            DURATION="2s",
            SUMMARY_EXPORT=str(wrong_summary),
        )
        assert wrong.returncode == K6_THRESHOLDS_CROSSED, wrong.stdout[-4000:] + wrong.stderr
        assert "thresholds on metrics" in wrong.stderr
        wrong_metrics = json.loads(wrong_summary.read_text())["metrics"]
        assert wrong_metrics["checks"]["value"] == 0
        assert wrong_metrics["http_req_failed"]["value"] > 0.5
        assert crossed(wrong_metrics["checks"]) == {"rate>0.99": True}
        assert crossed(wrong_metrics["http_req_failed"]) == {"rate<0.01": True}
        assert crossed(wrong_metrics["jobs_failed"]) == {"rate<0.01": True}
        assert "jobs_completed" not in wrong_metrics

        # Nothing listening: the script says how to start the API and does not run k6.
        dead_summary = tmp_path / "dead.json"
        dead = loadtest(
            "smoke",
            BASE_URL=f"http://127.0.0.1:{free_port()}",
            JOBFLEET_KEY=keys[0],
            SUMMARY_EXPORT=str(dead_summary),
        )
        assert dead.returncode == 1
        assert "start it with ./scripts/dev.sh" in dead.stderr
        assert not dead_summary.exists()

        assert dev.interrupt() == 0
    finally:
        dev.close()
