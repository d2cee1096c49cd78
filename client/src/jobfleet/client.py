"""Client and AsyncClient: the Jobfleet API from Python, sync and async, with the same methods.

Both run the calls of jobfleet._protocol, where requests, retries and replies are written once;
a client only sends the requests and sleeps (see that module).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping
from datetime import timedelta
from types import TracebackType
from typing import Any, Generic, Self, TypeVar, Unpack

import httpx

from jobfleet._protocol import (
    PAGE_LIMIT,
    Program,
    Protocol,
    RetryPolicy,
    Send,
    Sleep,
    schedule_body,
    settings_from_env,
)
from jobfleet._version import __version__
from jobfleet.models import (
    BatchResult,
    DeadLetterQuery,
    Heartbeat,
    Job,
    JobFilters,
    JobQuery,
    JobSpec,
    Lease,
    Page,
    ReplayChoice,
    ReplayResult,
    Schedule,
    ScheduleChanges,
    SchedulePage,
    SubmitOptions,
    Submitted,
)

__all__ = ["AsyncClient", "Client", "RetryPolicy"]

T = TypeVar("T")
TransportT = TypeVar("TransportT", httpx.BaseTransport, httpx.AsyncBaseTransport)
Items = list[dict[str, Any]]
Reply = httpx.Response | httpx.TransportError | None


class _Base(Generic[TransportT]):
    """What both clients hold: where the API is, the key, the timeout and the retry policy.

    `url` and `key` default to JOBFLEET_URL and JOBFLEET_KEY. `timeout` is each request's, in
    seconds (a lease's long poll adds its wait). `retries` is how often a refused or unanswered
    request is sent again, or a RetryPolicy. `transport` is an httpx transport (for tests),
    `headers` are sent with every request.
    """

    def __init__(
        self,
        url: str | None = None,
        key: str | None = None,
        *,
        timeout: float = 10.0,
        retries: int | RetryPolicy = 5,
        transport: TransportT | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.url, self.key = settings_from_env(url, key)
        self.timeout = timeout
        policy = retries if isinstance(retries, RetryPolicy) else RetryPolicy(retries=retries)
        self._protocol = Protocol(retry=policy)
        self._headers = {"User-Agent": f"jobfleet-python/{__version__}", **(headers or {})}
        if self.key:
            self._headers["Authorization"] = f"Bearer {self.key}"
        self._connect(transport)

    def _connect(self, transport: TransportT | None) -> None:
        raise NotImplementedError

    def _request_args(self, send: Send) -> dict[str, Any]:
        args: dict[str, Any] = {"params": send.params, "headers": send.headers}
        if send.json is not None:
            args["json"] = send.json
        if send.extra_timeout:
            args["timeout"] = self.timeout + send.extra_timeout
        return args

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r})"


class Client(_Base[httpx.BaseTransport]):
    """The Jobfleet API, synchronously: Client(url, key, *, timeout=10, retries=5,
    transport=None, headers=None), the arguments as in _Base. Use it as a context manager, or
    call close(). One client may serve many threads."""

    def _connect(self, transport: httpx.BaseTransport | None) -> None:
        self._http = httpx.Client(
            base_url=self.url, headers=self._headers, timeout=self.timeout, transport=transport
        )

    def _run(self, program: Program[T]) -> T:
        try:
            effect = next(program)
            while True:
                effect = program.send(self._effect(effect))
        except StopIteration as stop:
            result: T = stop.value
            return result

    def _effect(self, effect: Send | Sleep) -> Reply:
        if isinstance(effect, Sleep):
            time.sleep(effect.seconds)
            return None
        try:
            return self._http.request(effect.method, effect.path, **self._request_args(effect))
        except httpx.TransportError as exc:
            return exc

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- jobs ---------------------------------------------------------------------------------

    def submit(self, task: str, payload: Any = None, **options: Unpack[SubmitOptions]) -> Submitted:
        """Submit one job. Without `idempotency_key` one is generated, so a retried submit never
        makes a second job. `created` says whether this call made it."""
        return self._run(self._protocol.submit(task, payload, options))

    def submit_many(
        self, jobs: Iterable[JobSpec | Mapping[str, Any]], *, batch_size: int = 1000
    ) -> BatchResult:
        """Submit many jobs, `batch_size` (at most 1,000) per request; one result per job."""
        return self._run(self._protocol.submit_many(jobs, batch_size))

    def get(self, job_id: str) -> Job:
        """The job, with its `history`."""
        return self._run(self._protocol.get(job_id))

    def why(self, job_id: str) -> dict[str, Any]:
        """Why a queued or scheduled job has not started (GET /jobs/{id}/why)."""
        return self._run(self._protocol.why(job_id))

    def wait(self, job_id: str, timeout: float | None = None, *, poll: float = 1.0) -> Job:
        """The job once it has completed. Raises JobFailed when it ends failed or cancelled,
        WaitTimeout when `timeout` seconds pass first. Polls every `poll` seconds at most."""
        return self._run(self._protocol.wait(job_id, timeout, poll))

    def list(self, **query: Unpack[JobQuery]) -> Page:
        """One page of jobs matching the filters, newest first (`limit`, `cursor`, `offset`)."""
        return self._run(self._protocol.list_jobs(query))

    def iterate(
        self, *, page_size: int = PAGE_LIMIT, **filters: Unpack[JobFilters]
    ) -> Iterator[Job]:
        """Every job matching the filters, newest first, page after page (by cursor)."""
        cursor: str | None = None
        while True:
            query = {**filters, "limit": page_size, "cursor": cursor}
            page = self._run(self._protocol.list_jobs(query))
            yield from page.items
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    def cancel(self, job_id: str) -> Job:
        """Cancel a waiting job, or request the cancellation of a running one."""
        return self._run(self._protocol.cancel(job_id))

    def retry(self, job_id: str) -> Job:
        """A failed or cancelled job back to queued."""
        return self._run(self._protocol.retry_job(job_id))

    def delete(self, job_id: str) -> None:
        """Delete a job that is not running."""
        return self._run(self._protocol.delete(job_id))

    # -- the dead-letter queue ----------------------------------------------------------------

    def dlq_list(self, **query: Unpack[DeadLetterQuery]) -> Page:
        """One page of failed jobs (`queue`, `task`, `limit`, `cursor`)."""
        return self._run(self._protocol.dlq_list(query))

    def dlq_replay(self, job_id: str) -> Job:
        """One failed job back to queued."""
        return self._run(self._protocol.dlq_replay(job_id))

    def dlq_replay_many(self, **choice: Unpack[ReplayChoice]) -> ReplayResult:
        """Up to `limit` (1..1,000, default 100) failed jobs of `queue`, `task` or `ids` back to
        queued, those that failed first first."""
        return self._run(self._protocol.dlq_replay_many(choice))

    def dlq_delete(self, job_id: str) -> None:
        """Delete a failed job."""
        return self._run(self._protocol.delete(job_id, dlq=True))

    def overview(self, tenant: str | None = None) -> Items:
        """Every queue at a glance (GET /overview)."""
        return self._run(self._protocol.overview(tenant))

    # -- schedules ----------------------------------------------------------------------------

    def create_schedule(
        self,
        name: str,
        cron: str,
        task: str,
        payload: Any = None,
        *,
        timezone: str = "UTC",
        queue: str | None = None,
        priority: int | None = None,
        max_retries: int | None = None,
        timeout: float | timedelta | None = None,
        misfire_policy: str | None = None,
        enabled: bool = True,
    ) -> Schedule:
        """A cron schedule that makes a job of `task` with `payload` at each fire time of
        `cron` in `timezone`. None leaves a field to the API's default (`default` queue,
        priority 0, the server's retries and timeout, `run_latest`); `enabled=False` creates it
        paused. A retry after a lost reply returns the schedule its first try made; a name
        the tenant already uses raises Conflict (`schedule-name-taken`)."""
        options = {
            "timezone": timezone,
            "queue": queue,
            "priority": priority,
            "max_retries": max_retries,
            "timeout": timeout,
            "misfire_policy": misfire_policy,
            "enabled": enabled,
        }
        body = schedule_body(name, cron, task, payload, options)
        return self._run(self._protocol.create_schedule(body))

    def list_schedules(self, *, limit: int = 20, cursor: str | None = None) -> SchedulePage:
        """One page of schedules, oldest first: the key's tenant's (every tenant's for an
        admin key). `limit` 1..100; `cursor` the `next_cursor` of the page before."""
        return self._run(self._protocol.list_schedules(limit, cursor))

    def iterate_schedules(self, *, page_size: int = PAGE_LIMIT) -> Iterator[Schedule]:
        """Every schedule the key sees, oldest first, page after page (by cursor)."""
        cursor: str | None = None
        while True:
            page = self._run(self._protocol.list_schedules(page_size, cursor))
            yield from page.items
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    def get_schedule(self, schedule_id: str, *, upcoming: int | None = None) -> Schedule:
        """The schedule with its next fire times (`upcoming` of them, 1..50, 5 by default) and
        its latest jobs (`recent_jobs`). NotFound for another tenant's."""
        return self._run(self._protocol.get_schedule(schedule_id, upcoming))

    def update_schedule(self, schedule_id: str, **changes: Unpack[ScheduleChanges]) -> Schedule:
        """Change the fields given (at least one); a new cron or timezone moves the next fire
        time to the first one after now. Pause and resume change `enabled`."""
        return self._run(self._protocol.update_schedule(schedule_id, changes))

    def pause_schedule(self, schedule_id: str) -> Schedule:
        """No fire until resumed (a paused schedule stays paused)."""
        return self._run(self._protocol.pause_schedule(schedule_id, True))

    def resume_schedule(self, schedule_id: str) -> Schedule:
        """Fire again, from the first fire time after now."""
        return self._run(self._protocol.pause_schedule(schedule_id, False))

    def delete_schedule(self, schedule_id: str) -> None:
        """Delete the schedule; the jobs it made stay. Not retried after a lost reply."""
        return self._run(self._protocol.delete_schedule(schedule_id))

    def run_schedule(self, schedule_id: str) -> Job:
        """One job of the schedule's template now, paused or not: the new job. Not retried
        after a lost reply (a second try would make a second job)."""
        return self._run(self._protocol.run_schedule(schedule_id))

    # -- admin --------------------------------------------------------------------------------

    def queues(self) -> Items:
        """Every queue: jobs per status, oldest waiting age, paused flag (admin)."""
        return self._run(self._protocol.queues())

    def pause_queue(self, queue: str) -> dict[str, Any]:
        """Stop handing out the jobs of `queue` (admin)."""
        return self._run(self._protocol.pause_queue(queue, True))

    def resume_queue(self, queue: str) -> dict[str, Any]:
        """Hand out the jobs of `queue` again (admin)."""
        return self._run(self._protocol.pause_queue(queue, False))

    def workers(self) -> Items:
        """Live fleet processes, from their heartbeats (admin)."""
        return self._run(self._protocol.workers())

    def set_fleet_size(self, host: str, processes: int) -> dict[str, Any]:
        """How many worker processes `host` runs (admin)."""
        return self._run(self._protocol.set_fleet_size(host, processes))

    def clear_fleet_size(self, host: str) -> None:
        """Forget the size set for `host`: it goes back to its configured one (admin)."""
        return self._run(self._protocol.clear_fleet_size(host))

    # -- the HTTP lease protocol --------------------------------------------------------------

    def lease(
        self, queue: str, worker_id: str, *, lease_seconds: float = 30, wait_seconds: float = 0
    ) -> Lease | None:
        """The next job of `queue` with a lease, or None when none came within wait_seconds."""
        return self._run(self._protocol.lease(queue, worker_id, lease_seconds, wait_seconds))

    def ack(self, job_id: str, token: str, result: Any = None) -> None:
        """The leased attempt succeeded with `result`."""
        return self._run(self._protocol.ack(job_id, token, result))

    def nack(self, job_id: str, token: str, error: str, *, retry: bool = True) -> str:
        """The leased attempt failed; returns where the job went (scheduled, failed, cancelled)."""
        return self._run(self._protocol.nack(job_id, token, error, retry))

    def heartbeat(self, job_id: str, token: str, lease_seconds: float = 30) -> Heartbeat:
        """Extend the lease; learn whether a cancellation was requested."""
        return self._run(self._protocol.heartbeat(job_id, token, lease_seconds))


class AsyncClient(_Base[httpx.AsyncBaseTransport]):
    """The Jobfleet API for asyncio: the methods of Client, awaited (`iterate` is an async
    iterator: `async for job in client.iterate(...)`). Use it with `async with`, or call
    `await aclose()`."""

    def _connect(self, transport: httpx.AsyncBaseTransport | None) -> None:
        self._http = httpx.AsyncClient(
            base_url=self.url, headers=self._headers, timeout=self.timeout, transport=transport
        )

    async def _run(self, program: Program[T]) -> T:
        try:
            effect = next(program)
            while True:
                effect = program.send(await self._effect(effect))
        except StopIteration as stop:
            result: T = stop.value
            return result

    async def _effect(self, effect: Send | Sleep) -> Reply:
        if isinstance(effect, Sleep):
            await asyncio.sleep(effect.seconds)
            return None
        try:
            return await self._http.request(
                effect.method, effect.path, **self._request_args(effect)
            )
        except httpx.TransportError as exc:
            return exc

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    # The methods below are those of Client, awaited; their docstrings are there.

    async def submit(
        self, task: str, payload: Any = None, **options: Unpack[SubmitOptions]
    ) -> Submitted:
        return await self._run(self._protocol.submit(task, payload, options))

    async def submit_many(
        self, jobs: Iterable[JobSpec | Mapping[str, Any]], *, batch_size: int = 1000
    ) -> BatchResult:
        return await self._run(self._protocol.submit_many(jobs, batch_size))

    async def get(self, job_id: str) -> Job:
        return await self._run(self._protocol.get(job_id))

    async def why(self, job_id: str) -> dict[str, Any]:
        return await self._run(self._protocol.why(job_id))

    async def wait(self, job_id: str, timeout: float | None = None, *, poll: float = 1.0) -> Job:
        return await self._run(self._protocol.wait(job_id, timeout, poll))

    async def list(self, **query: Unpack[JobQuery]) -> Page:
        return await self._run(self._protocol.list_jobs(query))

    async def iterate(
        self, *, page_size: int = PAGE_LIMIT, **filters: Unpack[JobFilters]
    ) -> AsyncIterator[Job]:
        cursor: str | None = None
        while True:
            query = {**filters, "limit": page_size, "cursor": cursor}
            page = await self._run(self._protocol.list_jobs(query))
            for job in page.items:
                yield job
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    async def cancel(self, job_id: str) -> Job:
        return await self._run(self._protocol.cancel(job_id))

    async def retry(self, job_id: str) -> Job:
        return await self._run(self._protocol.retry_job(job_id))

    async def delete(self, job_id: str) -> None:
        return await self._run(self._protocol.delete(job_id))

    async def dlq_list(self, **query: Unpack[DeadLetterQuery]) -> Page:
        return await self._run(self._protocol.dlq_list(query))

    async def dlq_replay(self, job_id: str) -> Job:
        return await self._run(self._protocol.dlq_replay(job_id))

    async def dlq_replay_many(self, **choice: Unpack[ReplayChoice]) -> ReplayResult:
        return await self._run(self._protocol.dlq_replay_many(choice))

    async def dlq_delete(self, job_id: str) -> None:
        return await self._run(self._protocol.delete(job_id, dlq=True))

    async def overview(self, tenant: str | None = None) -> Items:
        return await self._run(self._protocol.overview(tenant))

    async def create_schedule(
        self,
        name: str,
        cron: str,
        task: str,
        payload: Any = None,
        *,
        timezone: str = "UTC",
        queue: str | None = None,
        priority: int | None = None,
        max_retries: int | None = None,
        timeout: float | timedelta | None = None,
        misfire_policy: str | None = None,
        enabled: bool = True,
    ) -> Schedule:
        options = {
            "timezone": timezone,
            "queue": queue,
            "priority": priority,
            "max_retries": max_retries,
            "timeout": timeout,
            "misfire_policy": misfire_policy,
            "enabled": enabled,
        }
        body = schedule_body(name, cron, task, payload, options)
        return await self._run(self._protocol.create_schedule(body))

    async def list_schedules(self, *, limit: int = 20, cursor: str | None = None) -> SchedulePage:
        return await self._run(self._protocol.list_schedules(limit, cursor))

    async def iterate_schedules(self, *, page_size: int = PAGE_LIMIT) -> AsyncIterator[Schedule]:
        cursor: str | None = None
        while True:
            page = await self._run(self._protocol.list_schedules(page_size, cursor))
            for schedule in page.items:
                yield schedule
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    async def get_schedule(self, schedule_id: str, *, upcoming: int | None = None) -> Schedule:
        return await self._run(self._protocol.get_schedule(schedule_id, upcoming))

    async def update_schedule(
        self, schedule_id: str, **changes: Unpack[ScheduleChanges]
    ) -> Schedule:
        return await self._run(self._protocol.update_schedule(schedule_id, changes))

    async def pause_schedule(self, schedule_id: str) -> Schedule:
        return await self._run(self._protocol.pause_schedule(schedule_id, True))

    async def resume_schedule(self, schedule_id: str) -> Schedule:
        return await self._run(self._protocol.pause_schedule(schedule_id, False))

    async def delete_schedule(self, schedule_id: str) -> None:
        return await self._run(self._protocol.delete_schedule(schedule_id))

    async def run_schedule(self, schedule_id: str) -> Job:
        return await self._run(self._protocol.run_schedule(schedule_id))

    async def queues(self) -> Items:
        return await self._run(self._protocol.queues())

    async def pause_queue(self, queue: str) -> dict[str, Any]:
        return await self._run(self._protocol.pause_queue(queue, True))

    async def resume_queue(self, queue: str) -> dict[str, Any]:
        return await self._run(self._protocol.pause_queue(queue, False))

    async def workers(self) -> Items:
        return await self._run(self._protocol.workers())

    async def set_fleet_size(self, host: str, processes: int) -> dict[str, Any]:
        return await self._run(self._protocol.set_fleet_size(host, processes))

    async def clear_fleet_size(self, host: str) -> None:
        return await self._run(self._protocol.clear_fleet_size(host))

    async def lease(
        self, queue: str, worker_id: str, *, lease_seconds: float = 30, wait_seconds: float = 0
    ) -> Lease | None:
        return await self._run(self._protocol.lease(queue, worker_id, lease_seconds, wait_seconds))

    async def ack(self, job_id: str, token: str, result: Any = None) -> None:
        return await self._run(self._protocol.ack(job_id, token, result))

    async def nack(self, job_id: str, token: str, error: str, *, retry: bool = True) -> str:
        return await self._run(self._protocol.nack(job_id, token, error, retry))

    async def heartbeat(self, job_id: str, token: str, lease_seconds: float = 30) -> Heartbeat:
        return await self._run(self._protocol.heartbeat(job_id, token, lease_seconds))
