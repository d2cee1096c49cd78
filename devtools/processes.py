"""Child processes and what /proc says about processes (Linux).

`/proc` tells live processes from zombies (an orphaned server is reparented to a PID 1 that may
never reap it), finds a process's children, and reads what another process was started with.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from app.settings import Settings
from devtools.waiting import WaitTimeout, wait_until

ROOT = Path(__file__).resolve().parent.parent
POLL_INTERVAL = 0.05


def start_app(args: list[str], env: dict[str, str], **options: Any) -> subprocess.Popen[Any]:
    """`python -m app <args>` from the repository root, with this interpreter."""
    return subprocess.Popen([sys.executable, "-m", "app", *args], cwd=ROOT, env=env, **options)


def settings_env(settings: Settings, **overrides: str) -> dict[str, str]:
    """This process's environment plus every setting: a child process started with it builds
    the same settings (then `overrides`). A setting this process read from a file is passed on
    as its value, without the `<NAME>_FILE` variable (both together would be refused)."""
    env = dict(os.environ)
    for name, value in settings.model_dump().items():
        if hasattr(value, "get_secret_value"):
            value = value.get_secret_value()
        env[name.upper()] = str(getattr(value, "value", value))
        for variable in [v for v in env if v.upper() == f"{name.upper()}_FILE"]:
            del env[variable]
    env.update(overrides)
    return env


def terminate(process: subprocess.Popen[Any], timeout: float = 15.0) -> int:
    """SIGTERM, then SIGKILL when it has not exited within `timeout` seconds; its exit status."""
    if process.poll() is None:
        process.terminate()
    try:
        return process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        return process.wait()


def pids() -> list[int]:
    """Every process id /proc lists now."""
    return [int(entry.name) for entry in Path("/proc").iterdir() if entry.name.isdigit()]


def proc_fields(pid: int) -> list[str] | None:
    """/proc/<pid>/stat after the command name: [state, ppid, pgrp, ...], None if unreadable."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name is in parentheses and may itself contain spaces or parentheses.
    return raw[raw.rindex(")") + 2 :].split()


def pid_alive(pid: int) -> bool:
    """True while `pid` runs; a zombie (dead, not yet reaped) counts as gone."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    fields = proc_fields(pid)
    return fields is None or fields[0] != "Z"


def cmdline(pid: int) -> str:
    """The command line `pid` runs, its arguments joined by spaces; "" when it is gone."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return ""
    return raw.replace(b"\0", b" ").decode(errors="replace")


def environ(pid: int) -> dict[str, str]:
    """The environment `pid` was started with; empty when it is gone or not ours to read."""
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return {}
    pairs = (item.decode(errors="replace").partition("=") for item in raw.split(b"\0") if item)
    return {name: value for name, _, value in pairs}


def children(pid: int) -> list[int]:
    """The processes whose parent is `pid` right now."""
    found = []
    for candidate in pids():
        fields = proc_fields(candidate)
        if fields is not None and int(fields[1]) == pid:
            found.append(candidate)
    return found


def send_signal(pid: int, signum: signal.Signals) -> None:
    """Send `signum` to `pid`, unless it is gone already."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signum)


def wait_gone(pid: int, process: subprocess.Popen[Any] | None, timeout: float) -> bool:
    """True once `pid` has exited (False after `timeout` seconds). `process`, when it is that
    pid's Popen, is waited on, which also reaps it: no zombie is left behind."""
    if process is not None and process.pid == pid:
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            return False
        return True
    try:
        wait_until(lambda: not pid_alive(pid), timeout, POLL_INTERVAL)
    except WaitTimeout:
        return False
    return True
