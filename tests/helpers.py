"""Test helpers: wait on conditions, never on time."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx

T = TypeVar("T")
ROOT = Path(__file__).resolve().parent.parent


def wait_until(predicate: Callable[[], T], timeout: float = 10.0, interval: float = 0.02) -> T:
    """Poll `predicate` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last: T = predicate()
    while not last:
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s (last value {last!r})")
        time.sleep(interval)
        last = predicate()
    return last


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def settings_env(settings: object, **overrides: str) -> dict[str, str]:
    """The environment that makes a child process build the same settings."""
    from app.settings import Settings

    assert isinstance(settings, Settings)
    env = dict(os.environ)
    for name, value in settings.model_dump().items():
        if hasattr(value, "get_secret_value"):
            value = value.get_secret_value()
        env[name.upper()] = str(value.value if hasattr(value, "value") else value)
    env.update(overrides)
    return env


def terminate(process: subprocess.Popen[Any], timeout: float = 15) -> int:
    """SIGTERM, then SIGKILL if it has not exited within `timeout`; its exit status."""
    process.terminate()
    try:
        return process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        return process.wait()


class LiveAPI:
    """A real `python -m app api` process on a free port."""

    def __init__(self, settings: object, **overrides: str) -> None:
        self.port = free_port()
        env = settings_env(settings, API_PORT=str(self.port), **overrides)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "app", "api"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        self.url = f"http://127.0.0.1:{self.port}"
        wait_until(self._healthy, timeout=30)

    def _healthy(self) -> bool:
        if self.process.poll() is not None:
            err = self.process.stderr.read().decode() if self.process.stderr else ""
            raise AssertionError(f"API exited with {self.process.returncode}: {err[-2000:]}")
        return answers(self.url)

    def stop(self) -> None:
        terminate(self.process)
        if self.process.stderr:
            self.process.stderr.close()


class LiveFleet:
    """A real `python -m app worker` (WorkerManager and its spawned worker processes);
    `burst`: with --burst, it exits by itself once its queues have no work left."""

    def __init__(
        self,
        settings: object,
        processes: int = 2,
        threads: int = 2,
        queues: str = "default",
        host: str | None = None,
        burst: bool = False,
        **overrides: str,
    ) -> None:
        import uuid

        self.host = host or f"test-{uuid.uuid4().hex[:8]}"
        fast = {
            "TASK_MODULES": "tests.fleet_tasks",
            "HEARTBEAT_INTERVAL_SECONDS": "0.5",
            "HEARTBEAT_TTL_SECONDS": "5",
            "FLEET_METRICS_PORT": "0",
        }
        env = settings_env(
            settings,
            FLEET_HOST=self.host,
            **{**fast, **overrides},
        )
        self.process = subprocess.Popen(
            [
                sys.executable, "-m", "app", "worker",
                "--processes", str(processes), "--threads", str(threads), "--queues", queues,
                *(["--burst"] if burst else []),
            ],
            cwd=ROOT,
            env=env,
        )  # fmt: skip

    def stop(self, timeout: float = 60) -> int:
        if self.process.poll() is None:
            self.process.terminate()
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise


def answers(url: str) -> bool:
    """True when GET <url>/health answers 200."""
    try:
        return httpx.get(f"{url}/health", timeout=1).status_code == 200
    except httpx.TransportError:
        return False


class LiveDev:
    """A real `python -m app dev`: read its banner, wait for its API, stop it with Ctrl-C."""

    def __init__(self, settings: object, local_dir: Path, **overrides: str) -> None:
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
        self.process = subprocess.Popen(
            [sys.executable, "-m", "app", "dev", "--local-dir", str(local_dir)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        self.banner: list[str] = []
        for line in self.process.stdout:
            self.banner.append(line)
            if line.startswith("Ctrl-C"):
                break
        keys = [line.split()[-1] for line in self.banner if "demo key" in line]
        assert keys, f"dev printed no demo key: {''.join(self.banner)}"
        self.key = keys[0]
        self.url = f"http://127.0.0.1:{self.port}"
        wait_until(lambda: answers(self.url), timeout=30)
        wait_until(self._fleet_up, timeout=60)

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
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()
