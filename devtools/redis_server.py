"""A redis-server of our own."""

from __future__ import annotations

import signal
from dataclasses import dataclass
from pathlib import Path

from devtools.binaries import find_redis_server
from devtools.probes import redis_probe
from devtools.server import STOP_TIMEOUT, PrivateServer


@dataclass
class PrivateRedis(PrivateServer):
    """A redis-server on 127.0.0.1, its files and log in `directory`.

    Persistence is off unless `appendonly` is set, so start() after stop() or kill() gives an
    empty Redis on the same port: the "Redis lost everything" case Jobfleet must survive.
    """

    appendonly: bool = False

    kind = "redis"
    program = "redis-server"
    stop_signals = ((signal.SIGTERM, STOP_TIMEOUT),)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pid_path(self) -> Path:
        return self.directory / "redis.pid"

    def answers(self) -> bool:
        pid = self.pid()
        if pid is None:
            return False
        info = redis_probe(self.url, 0.5, lambda client: client.info("server"))
        return isinstance(info, dict) and info.get("process_id") == pid

    def _prepare(self) -> list[str]:
        binary = find_redis_server()
        self.directory.mkdir(parents=True, exist_ok=True)
        return [
            str(binary),
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.directory),
            "--pidfile", str(self.pid_path),
            "--daemonize", "no",
            "--save", "",
            "--appendonly", "yes" if self.appendonly else "no",
        ]  # fmt: skip
