"""A PostgreSQL server of our own."""

from __future__ import annotations

import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from devtools.accounts import Account, chown_tree, grant_search, postgres_account
from devtools.binaries import find_postgres_bin_dir
from devtools.probes import postgres_answers
from devtools.server import STOP_TIMEOUT, PrivateServer, ServerError, tail

# sun_path holds 108 bytes; postgres appends "/.s.PGSQL.<port>.lock" to the socket directory.
MAX_SOCKET_DIR_LENGTH = 107 - len("/.s.PGSQL.65535.lock")


@dataclass
class PrivatePostgres(PrivateServer):
    """A PostgreSQL server on 127.0.0.1; `directory` is its data directory.

    Trust authentication, superuser "postgres". The unix socket lives in the data directory, so
    it never meets a system server's. `fast` turns off fsync and full_page_writes: only for
    data that may be lost when the machine (not the server) crashes, i.e. tests.

    `options` are more `name=value` settings for the command line (`-c`), such as
    `autovacuum=off` for a benchmark of a table that autovacuum forgot: a server of our own is
    the only place to change such a setting, never a shared one.

    `tcp=False` starts it with no TCP listener at all, reachable only through its unix socket
    (`socket_url`), as the official image runs its temporary server while its init scripts run;
    set `tcp` back and start it again to open 127.0.0.1:`port`.

    synchronous_commit stays on even when fast: an asynchronous commit lives only in shared
    memory for up to wal_writer_delay, so kill() would lose jobs that were committed, and the
    "no job is lost" tests would fail for the wrong reason. With fsync off, a synchronous
    commit costs one write() to the page cache, which survives kill().
    """

    fast: bool = False
    tcp: bool = True
    options: tuple[str, ...] = ()

    kind = "postgres"
    program = "postgres"
    # Fast shutdown (roll back open transactions, checkpoint, exit), then immediate shutdown.
    stop_signals = ((signal.SIGINT, STOP_TIMEOUT), (signal.SIGQUIT, 5.0))

    @property
    def url(self) -> str:
        return f"postgresql+psycopg2://postgres@127.0.0.1:{self.port}/postgres"

    @property
    def socket_url(self) -> str:
        """Where clients reach it through its unix socket (in the data directory)."""
        where = quote(self._socket_directory(), safe="")
        return f"postgresql+psycopg2://postgres@/postgres?host={where}&port={self.port}"

    @property
    def pid_path(self) -> Path:
        return self.directory / "postmaster.pid"

    def _postmaster_file(self) -> list[str]:
        # postmaster.pid: pid, data directory, start time, port, socket directory, listen
        # address, shared memory key, status ("starting", "ready", "stopping").
        try:
            return [line.strip() for line in self.pid_path.read_text().splitlines()]
        except OSError:
            return []

    def running_port(self) -> int | None:
        """The port of a server already running on this data directory, or None."""
        lines = self._postmaster_file()
        if self.pid() is None or len(lines) < 4 or not lines[3].isdigit():
            return None
        return int(lines[3])

    def answers(self) -> bool:
        # Asking the port alone is not enough: another server may answer there.
        pid, lines = self.pid(), self._postmaster_file()
        if pid is None or len(lines) < 8:
            return False
        if lines[0] != str(pid) or lines[3] != str(self.port) or lines[7] != "ready":
            return False
        return postgres_answers(self.url if self.tcp else self.socket_url, timeout=1.0)

    def _account(self) -> Account | None:
        return postgres_account()

    def _prepare(self) -> list[str]:
        """initdb when the data directory is new; the postgres command."""
        bin_dir = find_postgres_bin_dir()
        account = self._account()
        self._prepare_directory(bin_dir, account)
        if not (self.directory / "PG_VERSION").exists():
            self._initdb(bin_dir, account)
        self._check_version(bin_dir)
        if not self.tcp and not self._socket_directory():
            raise ServerError(
                f"{self.directory}: a server without TCP needs a unix socket, and this path is "
                "too long for one (or holds a comma or a quote); choose a shorter directory"
            )
        command = [
            str(bin_dir / "postgres"),
            "-D", str(self.directory),
            "-p", str(self.port),
            "-c", f"listen_addresses={'127.0.0.1' if self.tcp else ''}",
            "-c", f"unix_socket_directories={self._socket_directory()}",
        ]  # fmt: skip
        settings = ("fsync=off", "full_page_writes=off") if self.fast else ()
        for setting in (*settings, *self.options):
            command += ["-c", setting]
        return command

    def _prepare_directory(self, bin_dir: Path, account: Account | None) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        if account is not None:
            grant_search(self.directory, account)
            grant_search(bin_dir / "postgres", account)
            if self.directory.stat().st_uid != account.uid:
                chown_tree(self.directory, account)
        # Postgres refuses a data directory that others can read.
        self.directory.chmod(0o700)

    def _initdb(self, bin_dir: Path, account: Account | None) -> None:
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
            **(account.popen_options() if account is not None else {}),
        )
        output = result.stdout.decode(errors="replace")
        if result.returncode != 0:
            raise ServerError(f"initdb {self.directory} failed:\n{tail(output)}")
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
            raise ServerError(
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
