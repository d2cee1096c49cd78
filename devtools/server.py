"""A private server of our own on 127.0.0.1, its files and log in one directory: what the
private Postgres and the private Redis share (start, answer, stop, kill, find a running one).

A server runs in a session of its own, so a Ctrl-C meant for the shell script or the `dev`
command does not reach it: whoever started it stops it (`stop()`, or `python -m devtools
stop`). Its pid file lets another process find, reuse or stop it, and is checked against
/proc: a pid file left by a killed server may name an unrelated process by now.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, ClassVar, Self

from devtools.net import free_port, port_is_free
from devtools.processes import children, cmdline, pid_alive, send_signal, wait_gone
from devtools.waiting import WaitTimeout, wait_until

if TYPE_CHECKING:
    from devtools.accounts import Account

# Crash recovery after kill() replays the WAL, which can take a while on a slow disk.
START_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0
POLL_INTERVAL = 0.05
LOG_TAIL_LINES = 40


class ServerError(RuntimeError):
    """A private server could not be found, started or stopped.

    The message names the server, its directory and the tail of its log: fix the cause it
    shows (a port in use, a data directory from another PostgreSQL version, no pip access),
    or point DATABASE_URL / REDIS_URL at servers that answer.
    """


def tail(text: str, lines: int = LOG_TAIL_LINES) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])


@dataclass
class PrivateServer(ABC):
    """One server process on `port`, its files in `directory`."""

    directory: Path
    port: int = field(default_factory=free_port)
    _process: subprocess.Popen[bytes] | None = field(
        default=None, init=False, repr=False, compare=False
    )

    kind: ClassVar[str]  # "postgres" or "redis": names its log file and its record
    program: ClassVar[str]  # what its command line holds, to recognise it by its pid
    # How to ask it to stop: each signal in turn, with the seconds to wait; then kill().
    stop_signals: ClassVar[tuple[tuple[signal.Signals, float], ...]]

    def __post_init__(self) -> None:
        # Absolute, because the server runs in "/" (a directory any user may enter).
        self.directory = Path(self.directory).absolute()

    @property
    @abstractmethod
    def url(self) -> str:
        """Where clients reach it."""

    @property
    @abstractmethod
    def pid_path(self) -> Path:
        """The file whose first line is the server's pid while it runs."""

    @abstractmethod
    def answers(self) -> bool:
        """True when this directory's server (not another one) answers on `port`."""

    @abstractmethod
    def _prepare(self) -> list[str]:
        """Make the directory ready and return the command that runs the server."""

    def _account(self) -> Account | None:
        """The account the server runs as; None for our own."""
        return None

    @property
    def log_path(self) -> Path:
        return self.directory / f"{self.kind}.log"

    def pid(self) -> int | None:
        """The server's pid while it runs, also when another process started it."""
        if self._process is not None and self._process.poll() is None:
            return self._process.pid
        try:
            pid = int(self.pid_path.read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return None
        if pid_alive(pid) and self.program in cmdline(pid):
            return pid
        return None

    def start(self) -> None:
        """Start the server and return once it answers; a running one is left as it is."""
        if self.answers():
            return
        if not port_is_free(self.port):
            raise ServerError(
                f"cannot start {self.program} on 127.0.0.1:{self.port}: something else listens "
                "there; choose another port (or leave it out to get a free one)"
            )
        command = self._prepare()
        account = self._account()
        options: dict[str, Any] = account.popen_options() if account is not None else {}
        with self.log_path.open("ab") as log_file:
            if account is not None:
                os.chown(self.log_path, account.uid, account.gid)
            self._process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                cwd="/",
                start_new_session=True,
                **options,
            )
        self._await_ready(self._process)

    def stop(self) -> None:
        """Ask the server to shut down and wait; kill() it when it will not."""
        pid = self.pid()
        if pid is not None:
            for signum, patience in self.stop_signals:
                send_signal(pid, signum)
                if wait_gone(pid, self._process, patience):
                    break
            else:
                self.kill()
        self._process = None

    def kill(self) -> None:
        """SIGKILL the server and its children, as a crash would, and wait until all are gone.

        The children go too: a Postgres backend left running would keep the old shared memory
        attached, and the next start() would refuse to run beside it.
        """
        pid = self.pid()
        if pid is not None:
            # Frozen, the server cannot fork a child between our listing and our kill.
            send_signal(pid, signal.SIGSTOP)
            victims = [pid, *children(pid)]
            for victim in victims:
                send_signal(victim, signal.SIGKILL)
            wait_gone(pid, self._process, STOP_TIMEOUT)
            with contextlib.suppress(WaitTimeout):
                wait_until(lambda: not any(map(pid_alive, victims)), STOP_TIMEOUT, POLL_INTERVAL)
        self._process = None

    def _await_ready(self, process: subprocess.Popen[bytes]) -> None:
        """Poll until the server answers; raise with its log tail if it exits or takes too long."""
        name = f"{self.program} on port {self.port} ({self.directory})"

        def ready() -> bool:
            if process.poll() is not None:
                raise ServerError(
                    f"{name} exited with status {process.returncode} while starting; "
                    f"{self.log_path} ends with:\n{self._log_tail()}"
                )
            return self.answers()

        try:
            wait_until(ready, START_TIMEOUT, POLL_INTERVAL)
        except WaitTimeout:
            process.kill()
            process.wait()
            raise ServerError(
                f"{name} did not answer within {START_TIMEOUT:.0f} s; "
                f"{self.log_path} ends with:\n{self._log_tail()}"
            ) from None

    def _log_tail(self) -> str:
        try:
            return tail(self.log_path.read_text(errors="replace"))
        except OSError:
            return f"(no log at {self.log_path})"

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
