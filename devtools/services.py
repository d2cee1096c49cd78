"""The Postgres and Redis to use: the configured ones when they answer, else private ones.

`./scripts/dev.sh` and `./scripts/test.sh` must work on a machine that has Python 3.11 and
nothing else. `ensure_services()` keeps the servers at DATABASE_URL and REDIS_URL when they
answer and otherwise starts private ones under `.local/` (`.local/postgres` is the data
directory, `.local/redis` the Redis directory). Their ports are chosen free once and remembered
in `.local/postgres.port` and `.local/redis.port`, so the URLs stay the same from run to run;
the Postgres data directory is kept, so a second run finds its databases again. A private
server that a crashed run left behind is reused rather than started twice.

For the shell scripts, `record_started()` notes in `<local dir>/devstack-started.json` which
servers a run started, and `stop_recorded()` stops exactly those (`python -m devtools`).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

from devtools.net import free_port, port_is_free
from devtools.postgres_server import PrivatePostgres
from devtools.probes import postgres_answers, redact, redis_answers
from devtools.redis_server import PrivateRedis
from devtools.server import PrivateServer

log = logging.getLogger(__name__)

STATE_FILE = "devstack-started.json"
SERVERS: dict[str, type[PrivatePostgres] | type[PrivateRedis]] = {
    "postgres": PrivatePostgres,
    "redis": PrivateRedis,
}


def _read_port(path: Path) -> int:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return 0


def _remembered_port(path: Path) -> int:
    """The port used last time, so URLs stay stable; a fresh free one if it is taken."""
    port = _read_port(path)
    if port <= 0 or not port_is_free(port):
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


def _start_or_reuse(server: PrivateServer, port_file: Path, configured: str) -> bool:
    """Reuse `server` when it already runs on its port, else start it on the remembered port;
    True when it was started here."""
    if server.port > 0 and server.answers():
        log.info("%s: reusing the private server running on port %d", server.kind, server.port)
        return False
    server.port = _remembered_port(port_file)
    log.info(
        "%s: %s does not answer; starting a private server on port %d (%s)",
        server.kind,
        redact(configured),
        server.port,
        server.directory,
    )
    server.start()
    return True


def _ensure_postgres(
    database_url: str, local_dir: Path, fast: bool, started: list[PrivateServer]
) -> str:
    if postgres_answers(database_url):
        log.info("postgres: using %s", redact(database_url))
        return database_url
    server = PrivatePostgres(local_dir / "postgres", port=0, fast=fast)
    server.port = server.running_port() or 0
    if _start_or_reuse(server, local_dir / "postgres.port", database_url):
        started.append(server)
    parts = urlsplit(database_url)
    database = parts.path.strip("/") or "postgres"
    # Same driver and database name; the private server's superuser needs no password.
    return f"{parts.scheme}://postgres@127.0.0.1:{server.port}/{database}"


def _ensure_redis(redis_url: str, local_dir: Path, started: list[PrivateServer]) -> str:
    if redis_answers(redis_url):
        log.info("redis: using %s", redact(redis_url))
        return redis_url
    port_file = local_dir / "redis.port"
    # A leftover is found on the port it was given last time.
    server = PrivateRedis(local_dir / "redis", port=_read_port(port_file))
    if _start_or_reuse(server, port_file, redis_url):
        started.append(server)
    # Keep the database number the caller asked for.
    path = urlsplit(redis_url).path.rstrip("/") or "/0"
    return f"redis://127.0.0.1:{server.port}{path}"


def ensure_services(
    database_url: str, redis_url: str, local_dir: Path, *, fast: bool = False
) -> tuple[str, str, list[PrivateServer]]:
    """URLs of a Postgres and a Redis that answer, starting private ones under `local_dir`.

    Returns (database_url, redis_url, started): the given URLs when they answer, otherwise URLs
    of private servers (the database name and the Redis database number are kept). `started`
    lists the servers this call started; the caller stops them. A private server that was
    already running is used but not listed, so its owner keeps it. When starting fails, what
    this call started is stopped again before the error propagates.
    """
    local_dir.mkdir(parents=True, exist_ok=True)
    started: list[PrivateServer] = []
    with _locked(local_dir / ".devstack.lock"):
        try:
            database_url = _ensure_postgres(database_url, local_dir, fast, started)
            redis_url = _ensure_redis(redis_url, local_dir, started)
        except BaseException:
            for server in reversed(started):
                server.stop()
            raise
    return database_url, redis_url, started


def _load_state(path: Path) -> list[dict[str, object]]:
    try:
        servers = json.loads(path.read_text())["servers"]
    except (OSError, ValueError, KeyError, TypeError):
        return []
    return [entry for entry in servers if isinstance(entry, dict)]


def record_started(local_dir: Path, started: list[PrivateServer]) -> None:
    """Add `started` to the servers `stop_recorded()` will stop.

    Merged with what an earlier run recorded: if it crashed before stopping, its servers were
    reused just now, and the next stop should still end them.
    """
    state_path = local_dir / STATE_FILE
    entries = _load_state(state_path)
    for server in started:
        entry: dict[str, object] = {
            "kind": server.kind,
            "directory": str(server.directory.resolve()),
            "port": server.port,
            # For a reader; the stop asks the server's own pid file, which cannot go stale.
            "pid": server.pid(),
        }
        key = (entry["kind"], entry["directory"])
        entries = [e for e in entries if (e.get("kind"), e.get("directory")) != key]
        entries.append(entry)
    state_path.write_text(json.dumps({"servers": entries}, indent=2) + "\n")


def stop_recorded(local_dir: Path) -> None:
    """Stop the servers `record_started()` noted, newest first, and forget them."""
    state_path = local_dir / STATE_FILE
    for entry in reversed(_load_state(state_path)):
        server_class = SERVERS.get(str(entry.get("kind")))
        if server_class is None:
            continue
        port = int(str(entry.get("port", 0)))
        server = server_class(Path(str(entry.get("directory"))), port=port)
        if server.pid() is not None:
            log.info("%s: stopping the private server on port %d", server.kind, port)
            server.stop()
    state_path.unlink(missing_ok=True)
