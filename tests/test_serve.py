"""The API's workers: a socket each, connections spread over them, a dead one replaced."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import httpx

from app.settings import Settings
from devtools.probes import api_answers
from devtools.processes import children, cmdline, pid_alive
from tests.helpers import LiveAPI, terminate, wait_until


def _workers(api: LiveAPI) -> set[int]:
    """The live worker processes of the API (children of its supervisor)."""
    return {pid for pid in children(api.process.pid) if _is_worker(pid)}


def _is_worker(pid: int) -> bool:
    return pid_alive(pid) and "spawn_main" in cmdline(pid)


def _socket_inodes(pid: int) -> set[str]:
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = str(fd.readlink())
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    return inodes


def _tcp_sockets(port: int, state: str) -> set[str]:
    """Inodes of IPv4 TCP sockets on local `port` in `state` (0A listening, 01 established)."""
    found = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if int(fields[1].split(":")[1], 16) == port and fields[3] == state:
            found.add(fields[9])
    return found


def test_each_worker_listens_on_its_own_socket_and_gets_connections(settings: Settings) -> None:
    api = LiveAPI(settings, API_WORKERS="2")
    try:
        workers = wait_until(lambda: len(_workers(api)) == 2 and _workers(api))
        wait_until(lambda: len(_tcp_sockets(api.port, "0A")) == 2)
        listening = _tcp_sockets(api.port, "0A")
        assert all(len(_socket_inodes(pid) & listening) == 1 for pid in workers)

        # 32 long-lived clients, as a producer's connection pool would hold.
        clients = [httpx.Client(base_url=api.url) for _ in range(32)]
        try:
            for client in clients:
                assert client.get("/health").status_code == 200
            established = _tcp_sockets(api.port, "01")
            held = {pid: len(_socket_inodes(pid) & established) for pid in workers}
        finally:
            for client in clients:
                client.close()
        assert sum(held.values()) == 32
        assert min(held.values()) >= 4, held  # a shared accept queue can give one worker all
    finally:
        api.stop()


def test_a_killed_worker_is_replaced_and_sigterm_stops_them_all(settings: Settings) -> None:
    api = LiveAPI(settings, API_WORKERS="2")
    try:
        first = wait_until(lambda: len(_workers(api)) == 2 and _workers(api))
        victim = min(first)
        os.kill(victim, signal.SIGKILL)
        after = wait_until(lambda: victim not in _workers(api) and _workers(api), timeout=30)
        after = wait_until(lambda: len(_workers(api)) == 2 and _workers(api), timeout=30)
        assert len(after - first) == 1
        wait_until(lambda: len(_tcp_sockets(api.port, "0A")) == 2, timeout=30)
        assert api_answers(api.url)
    finally:
        workers = _workers(api)
        assert terminate(api.process) == 0
        api.stop()  # closes its pipe
        assert not any(_is_worker(pid) for pid in workers)
