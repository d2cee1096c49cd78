"""Schedules from the Python client and the `jobfleet schedules` commands, against a live API:
create, list, get with its next fire times, pause and resume, update, run now (its job in
GET /jobs), delete; the tenant wall; a create whose reply is lost; the command line's tables,
JSON and exit statuses. No duty runs here: every job comes from a run now."""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest
from jobfleet import (
    AsyncClient,
    Client,
    Conflict,
    NotFound,
    Schedule,
    TransportError,
    ValidationError,
)
from jobfleet._protocol import same_schedule, schedule_body, schedule_changes

from tests.helpers import LiveAPI
from tests.test_client import DroppingProxy
from tests.test_jobfleet_cli import ID, Cli

pytestmark = pytest.mark.live


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def key(make_key: Callable[..., str]) -> str:
    return make_key("acme", "producer")


@pytest.fixture
def api(live_api: LiveAPI, key: str) -> Iterator[Client]:
    with Client(live_api.url, key) as client:
        yield client


def test_create_list_get_pause_resume_update(api: Client) -> None:
    name = unique("nightly")
    made = api.create_schedule(
        name,
        "30  2 * * *",
        "send_report",
        {"report": "sales"},
        timezone="Europe/Berlin",
        queue="reports",
        priority=3,
        max_retries=2,
        timeout=120,
        misfire_policy="skip",
    )
    assert isinstance(made, Schedule) and made.tenant == "acme" and made.name == name
    assert made.cron == "30 2 * * *", "the API stores the expression's whitespace collapsed"
    assert (made.timezone, made.task, made.payload) == ("Europe/Berlin", "send_report", {
        "report": "sales"
    })  # fmt: skip
    assert (made.queue, made.priority, made.max_retries, made.timeout_seconds) == (
        "reports",
        3,
        2,
        120,
    )
    assert made.misfire_policy == "skip" and made.enabled and not made.paused
    assert made.next_fire_at is not None and made.next_fire_at > datetime.now(UTC)
    assert made.upcoming is None and made.recent_jobs is None, "a create carries no detail"

    defaults = api.create_schedule(unique("hourly"), "@hourly", "echo")
    assert (defaults.timezone, defaults.queue, defaults.priority, defaults.payload) == (
        "UTC",
        "default",
        0,
        {},
    )
    assert defaults.max_retries is None and defaults.misfire_policy == "run_latest"

    with pytest.raises(Conflict) as taken:
        api.create_schedule(name, "@daily", "echo")
    assert taken.value.status == 409 and taken.value.code == "schedule-name-taken"
    with pytest.raises(ValidationError) as invalid:
        api.create_schedule(unique("never"), "0 0 31 2 *", "echo")
    assert invalid.value.errors[0]["loc"] == ["body", "cron"]

    # Paging as the API pages: oldest first, by cursor.
    first = api.list_schedules(limit=1)
    assert len(first.items) == 1 and first.next_cursor is not None and first.limit == 1
    every = list(api.iterate_schedules(page_size=1))
    ids = [s.id for s in every]
    assert ids.index(made.id) < ids.index(defaults.id) and len(ids) == len(set(ids))

    detail = api.get_schedule(made.id, upcoming=3)
    assert detail.upcoming is not None and len(detail.upcoming) == 3
    assert detail.upcoming[0] == detail.next_fire_at and list(detail.upcoming) == sorted(
        detail.upcoming
    )
    berlin = [t.astimezone(ZoneInfo("Europe/Berlin")) for t in detail.upcoming]
    assert {(t.hour, t.minute) for t in berlin} == {(2, 30)}, "read in the schedule's zone"
    assert detail.recent_jobs == () and (detail.id, detail.cron) == (made.id, made.cron)

    paused = api.pause_schedule(made.id)
    assert paused.paused and paused.next_fire_at is None
    assert api.pause_schedule(made.id).paused, "pausing a paused schedule changes nothing"
    assert api.get_schedule(made.id).upcoming == (), "no fire times while paused"
    resumed = api.resume_schedule(made.id)
    assert resumed.enabled and resumed.next_fire_at is not None

    updated = api.update_schedule(
        made.id, cron="*/15 9-17 * * MON-FRI", payload=None, timeout=None, priority=7
    )
    assert (updated.cron, updated.payload, updated.timeout_seconds, updated.priority) == (
        "*/15 9-17 * * MON-FRI",
        None,
        None,
        7,
    )
    assert updated.next_fire_at is not None and updated.next_fire_at.minute % 15 == 0
    assert updated.name == name and updated.task == "send_report", "the rest stays"
    with pytest.raises(Conflict):
        api.update_schedule(made.id, name=defaults.name)
    with pytest.raises(TypeError):
        api.update_schedule(made.id)


def test_run_now_makes_a_job_and_delete_keeps_it(api: Client) -> None:
    queue = unique("sched")
    schedule = api.create_schedule(unique("weekly"), "@weekly", "echo", {"n": 1}, queue=queue)
    api.pause_schedule(schedule.id)
    job = api.run_schedule(schedule.id)
    assert job.status == "queued" and job.queue == queue and job.payload == {"n": 1}
    assert (job.idempotency_key or "").startswith(f"schedule:{schedule.id}:")
    listed = api.list(queue=queue)
    assert [j.id for j in listed.items] == [job.id], "GET /jobs shows the job, paused or not"
    recent = api.get_schedule(schedule.id).recent_jobs
    assert recent is not None and [(j.id, j.manual, j.fire_time) for j in recent] == [
        (job.id, True, None)
    ]

    api.delete_schedule(schedule.id)
    with pytest.raises(NotFound) as gone:
        api.get_schedule(schedule.id)
    assert gone.value.code == "schedule-not-found"
    with pytest.raises(NotFound):
        api.delete_schedule(schedule.id)
    assert api.get(job.id).id == job.id, "the jobs a schedule made stay"


def test_another_tenants_schedule_is_not_found(
    api: Client, live_api: LiveAPI, make_key: Callable[..., str]
) -> None:
    schedule = api.create_schedule(unique("walled"), "@daily", "echo")
    with Client(live_api.url, make_key("globex", "producer")) as other:
        calls: list[Callable[[], object]] = [
            lambda: other.get_schedule(schedule.id),
            lambda: other.update_schedule(schedule.id, priority=9),
            lambda: other.pause_schedule(schedule.id),
            lambda: other.resume_schedule(schedule.id),
            lambda: other.run_schedule(schedule.id),
            lambda: other.delete_schedule(schedule.id),
        ]
        for call in calls:
            with pytest.raises(NotFound) as hidden:
                call()
            assert hidden.value.code == "schedule-not-found"
        assert schedule.id not in {s.id for s in other.iterate_schedules()}
        # The same name is free in another tenant.
        assert other.create_schedule(schedule.name, "@daily", "echo").tenant == "globex"
    after = api.get_schedule(schedule.id)
    assert after.enabled and after.priority == 0 and after.recent_jobs == (), "untouched"


def test_async_client_has_the_same_calls(live_api: LiveAPI, key: str) -> None:
    async def scenario() -> tuple[Schedule, Schedule, list[str], str, bool]:
        async with AsyncClient(live_api.url, key) as api:
            made = await api.create_schedule(unique("async"), "0 * * * *", "echo", enabled=False)
            seen = [s.id async for s in api.iterate_schedules(page_size=2)]
            resumed = await api.resume_schedule(made.id)
            updated = await api.update_schedule(made.id, queue="async-q")
            job = await api.run_schedule(made.id)
            detail = await api.get_schedule(made.id)
            await api.delete_schedule(made.id)
            try:
                await api.get_schedule(made.id)
            except NotFound:
                deleted = True
            else:
                deleted = False
            assert detail.recent_jobs is not None and detail.recent_jobs[0].id == job.id
            return made, resumed, seen, updated.queue, deleted

    made, resumed, seen, queue, deleted = asyncio.run(scenario())
    assert made.paused and made.next_fire_at is None, "enabled=False creates it paused"
    assert resumed.enabled and resumed.next_fire_at is not None
    assert made.id in seen and queue == "async-q" and deleted


def test_a_create_whose_reply_is_lost_returns_its_schedule_and_run_is_not_repeated(
    api: Client, live_api: LiveAPI, key: str
) -> None:
    name = unique("lossy")
    proxy = DroppingProxy(live_api.url)
    try:
        with Client(proxy.url, key) as through_proxy:
            made = through_proxy.create_schedule(name, "@daily", "echo", {"a": [1, 2]})
        # A new connection for the next drop (the proxy drops per connection).
        proxy.drops = 1
        with Client(proxy.url, key) as through_proxy, pytest.raises(TransportError) as lost:
            through_proxy.run_schedule(made.id)
    finally:
        proxy.close()
    assert proxy.dropped[0].startswith(b"HTTP/1.1 201"), "the first try created it"
    named = [s for s in api.iterate_schedules() if s.name == name]
    assert [s.id for s in named] == [made.id], "one schedule, the one returned"
    assert lost.value.sent and proxy.dropped[1].startswith(b"HTTP/1.1 201")
    recent = api.get_schedule(made.id).recent_jobs
    assert recent is not None and len(recent) == 1, "the run was not sent twice"

    # Without a lost reply, a taken name is the caller's to know about.
    with pytest.raises(Conflict):
        api.create_schedule(name, "@daily", "echo", {"a": [1, 2]})


# -- the command line -----------------------------------------------------------------------------


@pytest.fixture
def cli(live_api: LiveAPI, key: str, monkeypatch: pytest.MonkeyPatch) -> Cli:
    monkeypatch.delenv("JOBFLEET_KEY", raising=False)
    monkeypatch.delenv("JOBFLEET_URL", raising=False)
    return Cli(live_api.url, key)


def test_the_schedules_commands_round_trip(cli: Cli, api: Client) -> None:
    name = unique("cli")
    queue = unique("cliq")
    schedule_id = cli.ok(
        "schedules", "create", name, "30 2 * * *", "echo", '{"x": 1}', "--tz", "Europe/Berlin",
        "--queue", queue, "--misfire", "skip",
    ).strip()  # fmt: skip
    assert re.fullmatch(ID, schedule_id), "create prints the id alone"
    made = api.get_schedule(schedule_id)
    assert (made.name, made.timezone, made.queue, made.misfire_policy, made.payload) == (
        name,
        "Europe/Berlin",
        queue,
        "skip",
        {"x": 1},
    )

    table = cli.ok("schedules", "ls", "--all")
    assert table.splitlines()[0].split()[:3] == ["ID", "NAME", "CRON"]
    row = next(line for line in table.splitlines() if line.startswith(schedule_id))
    assert name in row and "running" in row and "Europe/Berlin" in row
    page = json.loads(cli.ok("schedules", "ls", "--limit", "100", "--json"))
    assert set(page) == {"items", "limit", "next_cursor"} and page["limit"] == 100
    mine = next(item for item in page["items"] if item["id"] == schedule_id)
    assert mine["cron"] == "30 2 * * *" and mine["enabled"] is True

    details = cli.ok("schedules", "get", schedule_id, "--upcoming", "2")
    assert (
        "next fire times" in details
        and details.count("T00:30:00Z") + details.count("T01:30:00Z") >= 3
    ), "the next fire line and two upcoming times, 02:30 in Berlin"
    shown = json.loads(cli.ok("schedules", "get", schedule_id, "--json"))
    assert len(shown["upcoming"]) == 5 and shown["recent_jobs"] == []

    assert cli.ok("schedules", "pause", schedule_id).strip() == f"{schedule_id} paused"
    assert json.loads(cli.ok("schedules", "pause", schedule_id, "--json"))["enabled"] is False
    assert cli.ok("schedules", "resume", schedule_id).startswith(f"{schedule_id} running, next")

    job_id = cli.ok("schedules", "run", schedule_id).strip()
    assert [job.id for job in api.list(queue=queue).items] == [job_id]
    ran = json.loads(cli.ok("schedules", "run", schedule_id, "--json"))
    assert ran["status"] == "queued" and ran["idempotency_key"].startswith(
        f"schedule:{schedule_id}"
    )
    assert "latest jobs" in cli.ok("schedules", "get", schedule_id)

    assert cli.ok("schedules", "delete", schedule_id).strip() == f"{schedule_id} deleted"
    missing = cli("schedules", "get", schedule_id)
    assert missing.returncode == 1 and missing.stdout == ""
    assert "404 schedule-not-found" in missing.stderr
    taken = cli("schedules", "create", made.name, "@daily", "echo")
    assert taken.returncode == 0, "the name is free again once its schedule is deleted"
    again = cli("schedules", "create", made.name, "@daily", "echo", "--json")
    assert again.returncode == 1 and "409 schedule-name-taken" in again.stderr
    bad_cron = cli("schedules", "create", unique("bad"), "61 * * * *", "echo")
    assert bad_cron.returncode == 1 and "422" in bad_cron.stderr
    usage = cli("schedules", "create", unique("usage"), "@daily", "echo", "--misfire", "never")
    assert usage.returncode == 2 and "invalid choice" in usage.stderr
    assert cli("schedules", "frobnicate").returncode == 2


def test_the_console_script_pipes_a_run_into_wait(cli: Cli, api: Client) -> None:
    schedule = api.create_schedule(unique("piped"), "@yearly", "echo", {"piped": True})
    shell = cli.shell(
        f"jobfleet schedules run {schedule.id} | jobfleet wait --timeout 0.5; echo status=$?"
    )
    # No worker runs here: the wait times out (exit 1), after reading the id the run printed.
    assert "status=1" in shell.stdout, shell
    recent = api.get_schedule(schedule.id).recent_jobs
    assert recent is not None and len(recent) == 1 and recent[0].manual
    assert recent[0].id in shell.stderr, "wait read the id the run printed"


def test_what_counts_as_the_same_schedule_after_a_lost_reply() -> None:
    """The lookup after a lost reply returns a schedule only when it is exactly what was asked
    for, the API's defaults filling what the body left out."""
    body = schedule_body("n", "0  3 * * *", "echo", None, {"timezone": "UTC", "enabled": True})
    stored = Schedule.from_json({
        "id": "s1", "tenant": "acme", "name": "n", "cron": "0 3 * * *", "timezone": "UTC",
        "task": "echo", "payload": {}, "queue": "default", "priority": 0, "max_retries": None,
        "timeout_seconds": None, "enabled": True, "misfire_policy": "run_latest",
        "next_fire_at": "2030-01-01T03:00:00Z", "last_fired_at": None,
        "created_at": "2029-12-31T00:00:00Z", "updated_at": "2029-12-31T00:00:00Z",
    })  # fmt: skip
    assert same_schedule(stored, body)
    for change in ({"queue": "other"}, {"payload": {"x": 1}}, {"cron": "0 4 * * *"}):
        assert not same_schedule(stored, {**body, **change}), change
    assert schedule_changes({"timeout": 30, "payload": None}) == {
        "timeout_seconds": 30,
        "payload": None,
    }
    with pytest.raises(TypeError):
        schedule_changes({"enabled": False})
