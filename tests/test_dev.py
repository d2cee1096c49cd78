"""`python -m app dev`: the API and the fleet come up together and stop together."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import httpx

from app.dispatch import fleet as dispatch_fleet
from app.services.context import Context
from app.settings import Settings
from tests.helpers import ROOT, free_port, settings_env, wait_until


def test_dev_runs_api_and_fleet_and_ctrl_c_stops_both(
    settings: Settings, ctx: Context, tmp_path: Path
) -> None:
    port = free_port()
    host = f"dev-{port}"
    env = settings_env(
        settings, API_PORT=str(port), FLEET_HOST=host, WORKER_PROCESSES="1", LOG_LEVEL="WARNING"
    )
    dev = subprocess.Popen(
        [sys.executable, "-m", "app", "dev", "--local-dir", str(tmp_path)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert dev.stdout is not None
        lines: list[str] = []
        for line in dev.stdout:
            lines.append(line)
            if line.startswith("Ctrl-C"):
                break
        key = next(line.split()[-1] for line in lines if "demo key" in line)
        assert key == (tmp_path / "demo-key").read_text().strip()
        base = f"http://127.0.0.1:{port}"

        def healthy() -> bool:
            try:
                return httpx.get(f"{base}/health").status_code == 200
            except httpx.TransportError:
                return False

        wait_until(healthy, timeout=30)
        headers = {"Authorization": f"Bearer {key}"}
        job = httpx.post(f"{base}/jobs", json={"task": "echo", "payload": [1]}, headers=headers)
        assert job.status_code == 201
        done = wait_until(
            lambda: (
                httpx.get(f"{base}/jobs/{job.json()['id']}", headers=headers).json()["status"]
                == "completed"
            ),
            timeout=60,
        )
        assert done

        dev.send_signal(signal.SIGINT)
        assert dev.wait(timeout=60) == 0
        beats = dispatch_fleet.read_heartbeats(ctx.redis.client, ctx.keys)
        assert not [b for b in beats if b.get("host") == host]
    finally:
        if dev.poll() is None:
            dev.kill()
            dev.wait()
        if dev.stdout is not None:
            dev.stdout.close()
