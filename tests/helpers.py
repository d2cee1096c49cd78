"""Test helpers: live processes of the app (API, fleet, dev), and where their processes are.

The helpers the tests share with the tooling (polling with a deadline, free ports, settings as
a child's environment, terminate-then-kill) live in devtools, once; they are re-exported here.
"""

from __future__ import annotations

import signal
import subprocess
import uuid
from pathlib import Path

import httpx
import pytest

from app.settings import Settings
from devtools.net import free_port
from devtools.probes import api_answers
from devtools.processes import ROOT, environ, pid_alive, pids, settings_env, start_app, terminate
from devtools.waiting import wait_until

__all__ = [
    "HEAVY",
    "ROOT",
    "SUMMARY",
    "LiveAPI",
    "LiveDev",
    "LiveFleet",
    "free_port",
    "processes_of_host",
    "settings_env",
    "terminate",
    "wait_until",
]

# A report section whose title starts with this (`request.node.add_report_section`) is printed
# at the end of the run even when its test passed (tests/conftest.py): what a test prints
# itself would be lost under pytest-xdist, whose workers' output is not shown.
SUMMARY = "summary: "
# Tests that load the machine for long (fleets over 1,000 jobs, the fuzzer, the benchmark, the
# README tour, k6) and tests whose assertions measure time. ./scripts/test.sh runs the tests in
# one process per CPU (pytest-xdist, --dist loadgroup): these run one after another in one of
# them, so none of them shares the machine with another of them, while the other processes run
# the rest.
HEAVY = pytest.mark.xdist_group("heavy")


def processes_of_host(host: str) -> list[int]:
    """Live processes started with FLEET_HOST=`host`: a fleet's manager and its workers (and
    a dev process that runs that fleet)."""
    return [pid for pid in pids() if environ(pid).get("FLEET_HOST") == host and pid_alive(pid)]


class LiveAPI:
    """A real `python -m app api` process on a free port.

    Its stderr goes to a pipe, read when it dies while starting; `capture_stderr=False` lets it
    through to pytest's capture instead, for an API that logs a line per request (a pipe nobody
    drains would fill and stall it).
    """

    def __init__(self, settings: Settings, capture_stderr: bool = True, **overrides: str) -> None:
        self.port = free_port()
        env = settings_env(settings, API_PORT=str(self.port), **overrides)
        stderr = subprocess.PIPE if capture_stderr else None
        self.process = start_app(["api"], env, stdout=subprocess.DEVNULL, stderr=stderr)
        self.url = f"http://127.0.0.1:{self.port}"
        wait_until(self._healthy, timeout=30)

    def _healthy(self) -> bool:
        if self.process.poll() is not None:
            err = self.process.stderr.read().decode() if self.process.stderr else ""
            raise AssertionError(f"API exited with {self.process.returncode}: {err[-2000:]}")
        return api_answers(self.url)

    def stop(self) -> None:
        terminate(self.process)
        if self.process.stderr:
            self.process.stderr.close()


class LiveFleet:
    """A real `python -m app worker` (WorkerManager and its spawned worker processes);
    `burst`: with --burst, it exits by itself once its queues have no work left."""

    def __init__(
        self,
        settings: Settings,
        processes: int = 2,
        threads: int = 2,
        queues: str = "default",
        host: str | None = None,
        burst: bool = False,
        **overrides: str,
    ) -> None:
        self.host = host or f"test-{uuid.uuid4().hex[:8]}"
        env = settings_env(
            settings,
            FLEET_HOST=self.host,
            **{"TASK_MODULES": "tests.fleet_tasks", "FLEET_METRICS_PORT": "0", **overrides},
        )
        args = ["worker", "--processes", str(processes), "--threads", str(threads),
                "--queues", queues, *(["--burst"] if burst else [])]  # fmt: skip
        self.process = start_app(args, env)

    def stop(self, timeout: float = 60) -> int:
        """SIGTERM and its exit status; a fleet that needs killing fails the test."""
        if self.process.poll() is not None:
            return self.process.wait()
        status = terminate(self.process, timeout)
        assert status != -signal.SIGKILL, f"the fleet did not stop within {timeout} s: killed"
        return status


class LiveDev:
    """A real `python -m app dev`: read its banner, wait for its API and its fleet."""

    def __init__(self, settings: Settings, local_dir: Path, **overrides: str) -> None:
        self.port = free_port()
        self.host = f"dev-{self.port}"
        env = settings_env(
            settings,
            API_PORT=str(self.port),
            FLEET_HOST=self.host,
            FLEET_METRICS_PORT="0",
            WORKER_PROCESSES="1",
            LOG_LEVEL="WARNING",
            **overrides,
        )
        self.process = start_app(
            ["dev", "--local-dir", str(local_dir)], env, stdout=subprocess.PIPE, text=True
        )
        self.banner: list[str] = []
        self.url = f"http://127.0.0.1:{self.port}"
        try:
            self.key = self._read_banner()
            wait_until(lambda: api_answers(self.url), timeout=30)
            wait_until(self._fleet_up, timeout=60)
        except BaseException:
            # A dev that never came up must not outlive the test and work on its database.
            self.close()
            raise

    def _read_banner(self) -> str:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.banner.append(line)
            if line.startswith("Ctrl-C"):
                break
        keys = [line.split()[-1] for line in self.banner if line.strip().startswith("demo key")]
        assert keys, f"dev printed no demo key: {''.join(self.banner)}"
        return keys[0]

    def _fleet_up(self) -> bool:
        """Its fleet's worker process beats: jobs submitted now run without waiting for it."""
        reply = httpx.get(
            f"{self.url}/workers", headers={"Authorization": f"Bearer {self.key}"}, timeout=5
        )
        items = reply.json()["items"] if reply.status_code == 200 else []
        return any(w["host"] == self.host and w["kind"] == "worker" for w in items)

    def interrupt(self) -> int:
        """Ctrl-C, as a person would: the exit status once everything stopped."""
        self.process.send_signal(signal.SIGINT)
        return self.process.wait(timeout=60)

    def close(self) -> None:
        terminate(self.process, 60)
        if self.process.stdout is not None:
            self.process.stdout.close()
