"""Serving the API: one uvicorn process, or several workers that each listen on their own
SO_REUSEPORT socket.

uvicorn's own multi-worker mode shares one listening socket, and the kernel hands new
connections to whichever worker is waiting last, so a few long-lived clients (a load balancer,
a producer's connection pool) can all land on one worker while the others idle. With a socket
per worker in one SO_REUSEPORT group, the kernel spreads connections over the workers by their
addresses. This supervisor starts the workers, restarts one that dies, and stops them all,
gracefully, on SIGTERM or SIGINT.
"""

from __future__ import annotations

import logging
import multiprocessing
import signal
import socket
import threading
import time
from multiprocessing.connection import wait
from multiprocessing.process import BaseProcess
from types import FrameType
from typing import Any

import uvicorn

from app.metrics import mark_process_dead
from app.runtime import freeze_startup_objects

log = logging.getLogger(__name__)

STOP_SECONDS = 30.0  # each worker's grace to finish its requests
EARLY_DEATH_SECONDS = 10.0  # a worker that dies sooner than this after its start is crash-looping
RESTART_DELAY_MAX = 30.0


def serve(host: str, port: int, workers: int) -> None:
    app = "app.main:create_app"
    options: dict[str, Any] = {
        "factory": True, "host": host, "port": port, "log_config": None, "access_log": False,
    }  # fmt: skip
    if workers == 1:
        _run(uvicorn.Config(app, **options))
    elif not hasattr(socket, "SO_REUSEPORT"):  # the platform cannot share a port
        uvicorn.run(app, workers=workers, **options)
    else:
        _listener(host, port).close()  # a port already taken fails here, not in every worker
        Supervisor(uvicorn.Config(app, **options), workers).run()


def _listener(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto given explicitly: the event loop turns on TCP_NODELAY only for IPPROTO_TCP sockets.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    return sock


def _worker(config: uvicorn.Config) -> None:
    _run(config, [_listener(config.host, config.port)])


def _run(config: uvicorn.Config, sockets: list[socket.socket] | None = None) -> None:
    config.load()  # the app is built here, so that what it built is frozen before serving
    freeze_startup_objects()
    uvicorn.Server(config).run(sockets=sockets)


class Supervisor:
    def __init__(self, config: uvicorn.Config, workers: int) -> None:
        self._config = config
        self._workers = workers
        self._spawn = multiprocessing.get_context("spawn")  # no inherited connections
        self._stop = threading.Event()
        self._started_at: dict[int, float] = {}
        self._early_deaths = 0

    def run(self) -> None:
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._on_signal)
        processes = [self._start() for _ in range(self._workers)]
        log.info("API workers started", extra={"action": "api_started", "workers": len(processes)})
        while not self._stop.is_set():
            # Wakes when a worker exits; the timeout only lets a signal be noticed.
            wait([process.sentinel for process in processes], timeout=0.5)
            for index, process in enumerate(processes):
                if process.exitcode is not None and not self._stop.is_set():
                    log.warning(
                        "API worker died; starting another",
                        extra={"action": "api_worker_restarted", "pid": process.pid,
                               "exit_code": process.exitcode},
                    )  # fmt: skip
                    mark_process_dead(process.pid or 0)
                    self._pause_if_crash_looping(process)
                    if not self._stop.is_set():
                        processes[index] = self._start()
        for process in processes:
            process.terminate()  # SIGTERM: uvicorn finishes requests in flight, then exits
        for process in processes:
            process.join(STOP_SECONDS)
            if process.exitcode is None:
                process.kill()
                process.join()

    def _start(self) -> BaseProcess:
        process = self._spawn.Process(target=_worker, args=(self._config,), name="api-worker")
        process.start()
        self._started_at[process.pid or 0] = time.monotonic()
        return process

    def _pause_if_crash_looping(self, dead: BaseProcess) -> None:
        # A worker that cannot start (a bad setting, a failing import) would otherwise be
        # restarted as fast as it dies: back off, doubling up to 30 s.
        lived = time.monotonic() - self._started_at.pop(dead.pid or 0, 0.0)
        self._early_deaths = self._early_deaths + 1 if lived < EARLY_DEATH_SECONDS else 0
        if self._early_deaths:
            self._stop.wait(min(RESTART_DELAY_MAX, 0.5 * 2**self._early_deaths))

    def _on_signal(self, signum: int, _: FrameType | None) -> None:
        self._stop.set()
