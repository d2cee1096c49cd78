"""`python -m app dev`: the API and the fleet come up together and stop together, whatever
signal ends it; a fleet whose parent dies stops by itself; and without the tooling beside the
product (as in the image), `dev` and `bench` say so."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from app.dispatch import fleet as dispatch_fleet
from app.services.context import Context
from app.settings import Settings
from devtools.processes import pid_alive
from devtools.redis_server import PrivateRedis
from tests.helpers import (
    ROOT,
    LiveDev,
    LiveFleet,
    free_port,
    processes_of_host,
    settings_env,
    wait_until,
)

pytestmark = pytest.mark.live


def fleet_of(dev: LiveDev) -> list[int]:
    """The processes of dev's fleet: its manager and the manager's workers."""
    return [pid for pid in processes_of_host(dev.host) if pid != dev.process.pid]


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
        assert not processes_of_host(dev.host)
    finally:
        dev.close()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_sigterm_and_sighup_stop_the_fleet_and_the_servers_dev_started(
    settings: Settings, ctx: Context, tmp_path: Path, signum: signal.Signals
) -> None:
    # Nothing answers at this REDIS_URL: dev starts a private Redis, which it must stop too.
    dev = LiveDev(settings, tmp_path, REDIS_URL=f"redis://127.0.0.1:{free_port()}/0")
    try:
        port = int((tmp_path / "redis.port").read_text())
        redis_pid = PrivateRedis(tmp_path / "redis", port=port).pid()
        assert redis_pid is not None
        assert len(fleet_of(dev)) >= 2  # a manager and its worker

        dev.process.send_signal(signum)
        assert dev.process.wait(timeout=60) == 0
        wait_until(lambda: not processes_of_host(dev.host), timeout=5, what="the fleet's end")
        assert not pid_alive(redis_pid)
    finally:
        dev.close()


def test_a_fleet_stops_by_itself_when_dev_is_killed(
    settings: Settings, ctx: Context, tmp_path: Path
) -> None:
    dev = LiveDev(settings, tmp_path)
    try:
        assert len(fleet_of(dev)) >= 2
        dev.process.kill()  # no handler runs: the fleet notices its parent is gone
        dev.process.wait()
        wait_until(lambda: not processes_of_host(dev.host), timeout=10, what="the fleet's end")
    finally:
        dev.close()


def test_the_workers_of_a_killed_manager_stop(
    ctx: Context, start_fleet: Callable[..., LiveFleet]
) -> None:
    fleet = start_fleet(2, 1)
    workers = [pid for pid in processes_of_host(fleet.host) if pid != fleet.process.pid]
    assert len(workers) >= 2
    fleet.process.kill()
    fleet.process.wait()
    wait_until(lambda: not processes_of_host(fleet.host), timeout=10, what="the workers' end")


def test_dev_and_bench_say_where_they_live_when_the_tooling_is_absent(
    settings: Settings, tmp_path: Path
) -> None:
    # The product alone, as in the image: app/ without devtools/ and bench/ beside it.
    (tmp_path / "app").symlink_to(ROOT / "app")
    env = settings_env(settings)
    env.pop("PYTHONPATH", None)
    for command in ("dev", "bench"):
        done = subprocess.run(
            [sys.executable, "-m", "app", command],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 2, done.stderr
        assert f"`{command}` runs from a checkout of the Jobfleet repository" in done.stderr
        assert "Traceback" not in done.stderr
