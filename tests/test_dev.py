"""`python -m app dev`: the API and the fleet come up together and stop together."""

from __future__ import annotations

from pathlib import Path

import httpx

from app.dispatch import fleet as dispatch_fleet
from app.services.context import Context
from app.settings import Settings
from tests.helpers import LiveDev, wait_until


def test_dev_runs_api_and_fleet_and_ctrl_c_stops_both(
    settings: Settings, ctx: Context, tmp_path: Path
) -> None:
    dev = LiveDev(settings, tmp_path)
    try:
        assert dev.key == (tmp_path / "demo-key").read_text().strip()
        headers = {"Authorization": f"Bearer {dev.key}"}
        job = httpx.post(f"{dev.url}/jobs", json={"task": "echo", "payload": [1]}, headers=headers)
        assert job.status_code == 201
        done = wait_until(
            lambda: (
                httpx.get(f"{dev.url}/jobs/{job.json()['id']}", headers=headers).json()["status"]
                == "completed"
            ),
            timeout=60,
        )
        assert done

        assert dev.interrupt() == 0
        beats = dispatch_fleet.read_heartbeats(ctx.redis.client, ctx.keys)
        assert not [b for b in beats if b.get("host") == dev.host]
    finally:
        dev.close()
