"""The benchmark's HTTP load: closed-loop httpx clients, spread over several processes, and a
paced open-loop load from this process.

One Python process of httpx clients spends about half a millisecond of CPU per request, so a
single one would measure the load generator rather than the API. The clients are split over
processes (spawned, so none inherits a connection) that start together at a barrier. The paced
load (pickup's 200 a second, from one process) uses a minimal HTTP/1.1 client instead.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import os
import time
from dataclasses import dataclass
from multiprocessing.synchronize import Barrier
from typing import Any
from urllib.parse import urlsplit

import httpx
import uvloop

from devtools.processes import children, proc_fields


@dataclass(frozen=True)
class Load:
    url: str
    headers: dict[str, str]
    path: str
    body: Any
    expect: int  # the status code every reply must have
    requests: int
    clients: int
    method: str = "POST"
    # Paced load: each request's body is `body` plus `payload: {"sent": time.time()}` taken
    # just before it is written, as the peers' producers take it just before their enqueue call.
    stamp: bool = False


@dataclass(frozen=True)
class Measured:
    seconds: float  # from the first request sent to the last reply received
    latencies: list[float]  # seconds, one per request
    cpu_seconds: float  # spent by the load generator itself
    behind_seconds: float = 0.0  # paced: the longest a request was sent after its time


def _request(load: Load) -> httpx.Request:
    # Sent through httpx's transport, without the client layer (cookies, redirects, URL
    # merging): the same HTTP/1.1 connection handling for about 16% less CPU per request.
    # One request object, sent again and again.
    return httpx.Request(
        load.method,
        load.url + load.path,
        headers=load.headers,
        json=load.body,
        extensions={"timeout": httpx.Timeout(60).as_dict()},
    )


async def _send(transport: httpx.AsyncHTTPTransport, request: httpx.Request, expect: int) -> float:
    """One request and its whole reply; the seconds it took."""
    began = time.perf_counter()
    response = await transport.handle_async_request(request)
    body = await response.aread()
    await response.aclose()
    if response.status_code != expect:
        raise RuntimeError(f"{response.status_code} {body[:500]!r}")
    return time.perf_counter() - began


async def _clients(load: Load, requests: int, clients: int) -> list[float]:
    latencies: list[float] = []
    remaining = [requests]
    request = _request(load)

    async def client() -> None:
        limits = httpx.Limits(max_connections=1)
        async with httpx.AsyncHTTPTransport(limits=limits) as transport:
            while remaining[0] > 0:
                remaining[0] -= 1
                latencies.append(await _send(transport, request, load.expect))

    await asyncio.gather(*(client() for _ in range(clients)))
    return latencies


def _share(load: Load, requests: int, clients: int, start: Barrier, out: Any) -> None:
    try:
        start.wait(60)
        began = time.perf_counter()  # CLOCK_MONOTONIC: comparable across processes
        cpu = time.process_time()
        latencies = uvloop.run(_clients(load, requests, clients))
        out.put((began, time.perf_counter(), latencies, time.process_time() - cpu, None))
    except Exception as exc:  # noqa: BLE001 - reported to the parent, which raises it
        out.put((0.0, 0.0, [], 0.0, f"{type(exc).__name__}: {exc}"))


def closed_loop(load: Load, processes: int) -> Measured:
    """Send `load.requests` requests from `load.clients` clients in `processes` processes."""
    spawn = multiprocessing.get_context("spawn")
    start = spawn.Barrier(processes)
    out = spawn.Queue()
    workers = []
    for index in range(processes):
        requests = load.requests // processes + (index < load.requests % processes)
        clients = load.clients // processes + (index < load.clients % processes)
        worker = spawn.Process(target=_share, args=(load, requests, clients, start, out))
        worker.start()
        workers.append(worker)
    shares = [out.get(timeout=600) for _ in workers]
    for worker in workers:
        worker.join(60)
    errors = [error for *_, error in shares if error]
    if errors:
        raise RuntimeError(f"load generator failed: {errors[0]}")
    began = min(share[0] for share in shares)
    ended = max(share[1] for share in shares)
    latencies = [latency for share in shares for latency in share[2]]
    return Measured(ended - began, latencies, sum(share[3] for share in shares))


def paced(load: Load, rate: float) -> Measured:
    """Send `load.requests` requests at a steady `rate` per second (open loop: a slow reply
    does not delay the next request), from this process, each over the next free one of
    `load.clients` connections."""
    return uvloop.run(_paced(load, rate))


class _Connection:
    """One keep-alive HTTP/1.1 connection that speaks just enough of the protocol for the paced
    load: a request written in one piece, its reply read to its Content-Length (uvicorn sends
    one with every reply). About a tenth of httpx's CPU per request (half a millisecond):
    on two busy cores httpx fell behind 200 requests a second, and its own queueing counted
    as pickup time, while the peers' producers spend a Redis call per job."""

    def __init__(self, load: Load) -> None:
        url = urlsplit(load.url)
        self.host, self.port = url.hostname or "127.0.0.1", url.port or 80
        fields = {"Host": url.netloc, "Content-Type": "application/json", **load.headers}
        self.head = (
            f"{load.method} {url.path.rstrip('/')}{load.path} HTTP/1.1\r\n"
            + "".join(f"{name}: {value}\r\n" for name, value in fields.items())
        ).encode()
        self.expect = load.expect
        self.streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def open(self) -> None:
        self.streams = await asyncio.open_connection(self.host, self.port)

    async def send(self, body: bytes) -> float:
        """One request and its whole reply; the seconds it took."""
        assert self.streams is not None
        reader, writer = self.streams
        began = time.perf_counter()
        writer.write(self.head + b"Content-Length: %d\r\n\r\n" % len(body) + body)
        status = int((await reader.readline()).split()[1])
        length = 0
        while (line := await reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        reply = await reader.readexactly(length)
        if status != self.expect:
            raise RuntimeError(f"{status} {reply[:500]!r}")
        return time.perf_counter() - began

    async def close(self) -> None:
        if self.streams is not None:
            self.streams[1].close()
            await self.streams[1].wait_closed()


def _body(load: Load) -> bytes:
    if load.stamp:
        return json.dumps({**load.body, "payload": {"sent": time.time()}}).encode()
    return json.dumps(load.body).encode()


async def _paced(load: Load, rate: float) -> Measured:
    # Connected before the clock starts. Each sends one request at a time; a request waits for
    # a free one (`behind` says how long at most) and is stamped when it goes.
    connections = [_Connection(load) for _ in range(load.clients)]
    await asyncio.gather(*(connection.open() for connection in connections))
    latencies: list[float] = []
    due: asyncio.Queue[float | None] = asyncio.Queue()
    behind = [0.0]

    async def sender(connection: _Connection) -> None:
        try:
            while (when := await due.get()) is not None:
                behind[0] = max(behind[0], time.perf_counter() - when)
                latencies.append(await connection.send(_body(load)))
        finally:
            await connection.close()

    cpu = time.process_time()
    began = time.perf_counter()
    senders = [asyncio.ensure_future(sender(connection)) for connection in connections]
    for index in range(load.requests):
        when = began + index / rate
        delay = when - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        due.put_nowait(when)
    for _ in senders:
        due.put_nowait(None)
    await asyncio.gather(*senders)
    seconds = time.perf_counter() - began
    return Measured(seconds, latencies, time.process_time() - cpu, behind[0])


def process_tree_cpu_seconds(pid: int) -> float:
    """CPU time (user and system) of a process and its children so far, from /proc (Linux)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for member in [pid, *children(pid)]:
        fields = proc_fields(member)
        if fields is not None:
            total += (int(fields[11]) + int(fields[12])) / ticks  # utime, stime
    return total
