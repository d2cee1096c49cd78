"""What the benchmark runs on: a database and key prefix of its own, and the API and fleet
processes it starts and stops."""

from __future__ import annotations

import subprocess
import time
import uuid
from typing import IO

from sqlalchemy.engine import make_url

from app.dispatch import reconcile
from app.domain.schemas import JobCreate
from app.services import auth, jobs
from app.services.context import Context
from app.settings import Settings
from app.store.admin import migrate
from bench import readout
from devtools.net import free_port
from devtools.probes import api_answers
from devtools.processes import settings_env, start_app, terminate
from devtools.sandbox import erase, with_database
from devtools.waiting import wait_until


class Stack:
    """A database and key prefix of the benchmark's own, and the processes it starts."""

    def __init__(self, settings: Settings, api_workers: int) -> None:
        # Named after the configured ones, so it never touches a stack's data.
        self.settings = settings.model_copy(
            update={
                "database_url": with_database(
                    settings.database_url, f"{make_url(settings.database_url).database}_bench"
                ),
                "key_prefix": f"{settings.key_prefix}bench",
                "rate_limit_enabled": False,
                "log_level": "WARNING",
                "fleet_metrics_port": 0,
                "api_metrics_port": 0,
            }
        )
        self.api_workers = api_workers
        self.processes: list[subprocess.Popen[bytes]] = []
        self.ctx = Context(self.settings)
        self.fleet_launched = 0.0  # time.time() just before the last fleet's command started

    def reset(self) -> None:
        """An empty database and no keys but the epoch, a checkpoint, and a fresh producer
        key."""
        self.ctx.close()
        erase(self.settings)
        migrate(self.settings.database_url)
        readout.checkpoint(self.settings.database_url)
        self.ctx = Context(self.settings)
        # A system that has run before: its Redis holds the epoch, which the reconciler writes
        # when it finds Redis empty. Without it, the first fleet of a run would push every
        # queued id a second time while it drains.
        reconcile.write_epoch(self.ctx.redis.client, self.ctx.keys, str(uuid.uuid4()))
        _, self.key = auth.create_key(self.ctx, "bench", [auth.Scope.PRODUCER])
        self.principal = auth.authenticate(self.ctx, f"Bearer {self.key}")

    def start_api(self, settings: Settings | None = None, log: IO[bytes] | None = None) -> str:
        """The API on a free port (`settings`: other than the benchmark's; `log`: where its
        log lines go, else this process's stderr); its URL once it answers."""
        port = free_port()
        env = settings_env(
            settings or self.settings, API_PORT=str(port), API_WORKERS=str(self.api_workers)
        )
        self._start(["api"], env, log)
        url = f"http://127.0.0.1:{port}"
        wait_until(lambda: api_answers(url), 60, what="the API start")
        return url

    def start_fleet(
        self,
        processes: int,
        threads: int,
        queue: str,
        settings: Settings | None = None,
        log: IO[bytes] | None = None,
    ) -> subprocess.Popen[bytes]:
        args = ["worker", "--processes", str(processes), "--threads", str(threads),
                "--queues", queue]  # fmt: skip
        env = settings_env(
            settings or self.settings,
            FLEET_HOST=f"bench-{uuid.uuid4().hex[:6]}",
            TASK_MODULES="bench.probe",
        )
        # The clock the peers' start-up is measured from: their worker command's launch.
        self.fleet_launched = time.time()
        return self._start(args, env, log)

    def _start(
        self, args: list[str], env: dict[str, str], log: IO[bytes] | None = None
    ) -> subprocess.Popen[bytes]:
        process: subprocess.Popen[bytes] = start_app(args, env, stderr=log)
        self.processes.append(process)
        return process

    def stop(self, process: subprocess.Popen[bytes]) -> None:
        terminate(process, 60)
        self.processes.remove(process)

    def close(self) -> None:
        for process in list(self.processes):
            self.stop(process)
        self.ctx.close()
        erase(self.settings)

    def count(self, queue: str, status: str) -> int:
        with self.ctx.db.transaction() as session:
            return readout.count_status(session, queue, status)

    def unfinished(self, queue: str) -> bool:
        with self.ctx.db.transaction() as session:
            return readout.has_unfinished(session, queue)

    def enqueue(self, queue: str, total: int) -> None:
        """Queue `total` noop jobs through the service, 1,000 per transaction."""
        for start in range(0, total, 1000):
            batch = [JobCreate(task="noop", queue=queue) for _ in range(min(1000, total - start))]
            jobs.submit_many(self.ctx, self.principal, batch)
