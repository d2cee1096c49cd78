"""The pure rules of schedules, on a fake clock: cron expressions and aliases, fire times in a
time zone across both daylight-saving changes, and what a late duty does about missed fire
times. No database, no sleeping: the clock is an argument."""

from __future__ import annotations

import itertools
import time
import uuid
from collections import Counter
from datetime import UTC, date, datetime, timedelta

import pytest

from app.domain.schedules import (
    Cron,
    CronError,
    MisfirePolicy,
    fire_key,
    key_range,
    manual_key,
    next_fire,
    parse_cron,
    parse_timezone,
    plan,
    read_key,
    upcoming,
)

GRACE = timedelta(seconds=30)
BERLIN = parse_timezone("Europe/Berlin")  # 2026: forward 29 March 02:00, back 25 October 03:00
NEW_YORK = parse_timezone("America/New_York")  # 2026: forward 8 March 02:00, back 1 November 02:00


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


def fires_between(cron: Cron, zone: object, start: datetime, end: datetime) -> list[datetime]:
    times = []
    moment = start
    while True:
        moment = next_fire(cron, zone, moment)  # type: ignore[arg-type]
        if moment >= end:
            return times
        times.append(moment)


def run_duty(
    cron: Cron, zone: object, first: datetime, start: datetime, end: datetime, step: timedelta
) -> list[datetime]:
    """A duty that runs every `step` from `start` to `end` on a fake clock: every fire time."""
    fired: list[datetime] = []
    next_fire_at, now = first, start
    while now < end:
        decided = plan(cron, zone, next_fire_at, now, MisfirePolicy.SKIP, GRACE, 100)  # type: ignore[arg-type]
        fired += decided.fires
        assert not decided.missed, now
        next_fire_at = decided.next_fire_at
        now += step
    return fired


def local_dates(times: list[datetime], zone: object) -> Counter[date]:
    return Counter(t.astimezone(zone).date() for t in times)  # type: ignore[arg-type]


# -- expressions ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("alias", "fields"),
    [
        ("@hourly", "0 * * * *"),
        ("@daily", "0 0 * * *"),
        ("@midnight", "0 0 * * *"),
        ("@weekly", "0 0 * * 0"),
        ("@monthly", "0 0 1 * *"),
        ("@yearly", "0 0 1 1 *"),
        ("@annually", "0 0 1 1 *"),
        ("@HOURLY", "0 * * * *"),
    ],
)
def test_aliases_read_as_their_five_fields(alias: str, fields: str) -> None:
    cron = parse_cron(alias)
    assert cron.expression == alias and cron.fields == fields
    start = at("2026-05-05T10:20:00+00:00")
    assert next_fire(cron, BERLIN, start) == next_fire(parse_cron(fields), BERLIN, start)


@pytest.mark.parametrize(
    ("expression", "reason"),
    [
        ("", "empty"),
        ("* * * *", "4 fields"),
        ("* * * * * *", "6 fields"),
        ("@reboot", "unknown alias"),
        ("61 * * * *", "not a cron expression"),
        ("*/0 * * * *", "not a cron expression"),
        ("0 0 31 2 *", "never fires"),
        ("0 0 30 2 *", "never fires"),
        ("R * * * *", "random"),
        ("H * * * *", "hashed"),
        ("H(0-29) * * * *", "hashed"),
        ("1,,2 * * * *", "not a cron expression"),
        ("\x00 * * * *", "not a cron expression"),
        ("9" * 200, "longer than"),
    ],
)
def test_bad_expressions_are_refused_with_a_reason(expression: str, reason: str) -> None:
    with pytest.raises(CronError, match=reason):
        parse_cron(expression)


def test_a_sixth_field_is_seconds_only_where_allowed() -> None:
    cron = parse_cron("* * * * * */15", seconds=True)
    start = at("2026-01-01T00:00:00+00:00")
    assert upcoming(cron, parse_timezone("UTC"), start, 3) == [
        start,
        start + timedelta(seconds=15),
        start + timedelta(seconds=30),
    ]
    with pytest.raises(CronError, match="6 fields"):
        parse_cron("* * * * * */15")


def test_names_days_and_time_zones() -> None:
    weekdays = parse_cron("0 9 * * MON-FRI")
    times = upcoming(weekdays, BERLIN, at("2026-05-01T00:00:00+00:00"), 3)  # a Friday
    assert [t.astimezone(BERLIN).isoformat() for t in times] == [
        "2026-05-01T09:00:00+02:00",
        "2026-05-04T09:00:00+02:00",
        "2026-05-05T09:00:00+02:00",
    ]
    for bad in ("Mars/Olympus", "localtime", "Factory", "../etc/passwd", "", "utc "):
        with pytest.raises(CronError, match="unknown time zone"):
            parse_timezone(bad)


# -- daylight saving ------------------------------------------------------------------------


@pytest.mark.parametrize("zone", [BERLIN, NEW_YORK], ids=["Europe/Berlin", "America/New_York"])
def test_a_0230_daily_job_runs_once_a_day_across_both_changes(zone: object) -> None:
    daily = parse_cron("30 2 * * *")
    for start, end in (
        (at("2026-03-01T00:00:00+00:00"), at("2026-04-05T00:00:00+00:00")),
        (at("2026-10-20T00:00:00+00:00"), at("2026-11-05T00:00:00+00:00")),
    ):
        times = fires_between(daily, zone, start, end)
        per_day = local_dates(times, zone)
        assert set(per_day.values()) == {1}, per_day
        days = (end - start).days
        assert len(per_day) in (days, days - 1)


def test_the_0230_job_in_berlin_on_the_change_days_exactly() -> None:
    daily = parse_cron("30 2 * * *")
    spring = fires_between(
        daily, BERLIN, at("2026-03-28T12:00:00+01:00"), at("2026-03-30T12:00:00+02:00")
    )
    # 02:30 does not exist on 29 March: it fires once, when the clocks jump to 03:00.
    assert [t.astimezone(BERLIN).isoformat() for t in spring] == [
        "2026-03-29T03:00:00+02:00",
        "2026-03-30T02:30:00+02:00",
    ]
    autumn = fires_between(
        daily, BERLIN, at("2026-10-24T12:00:00+02:00"), at("2026-10-26T12:00:00+01:00")
    )
    # 02:30 happens twice on 25 October: it fires at the first (summer time) only.
    assert [t.isoformat() for t in autumn] == [
        "2026-10-25T00:30:00+00:00",
        "2026-10-26T01:30:00+00:00",
    ]
    # Started inside the repeated hour, after the first 02:30: the next is the next day's.
    inside = at("2026-10-25T02:45:00+02:00")
    assert next_fire(daily, BERLIN, inside) == at("2026-10-26T02:30:00+01:00")


def test_the_duty_on_a_fake_clock_fires_the_0230_job_once_on_each_change_day() -> None:
    daily = parse_cron("30 2 * * *")
    for day_before, day_after in (
        (at("2026-03-28T12:00:00+00:00"), at("2026-03-30T12:00:00+00:00")),
        (at("2026-10-24T12:00:00+00:00"), at("2026-10-26T12:00:00+00:00")),
    ):
        first = next_fire(daily, BERLIN, day_before)
        fired = run_duty(daily, BERLIN, first, day_before, day_after, timedelta(seconds=20))
        assert sorted(local_dates(fired, BERLIN).values()) == [1, 1], fired
        assert len(set(fired)) == len(fired)


def test_an_hourly_job_runs_every_real_hour_23_or_25_on_the_change_days() -> None:
    hourly = parse_cron("@hourly")
    spring = fires_between(
        hourly, BERLIN, at("2026-03-29T00:00:00+01:00") - timedelta(seconds=1),
        at("2026-03-30T00:00:00+02:00") - timedelta(seconds=1),
    )  # fmt: skip
    autumn = fires_between(
        hourly, BERLIN, at("2026-10-25T00:00:00+02:00") - timedelta(seconds=1),
        at("2026-10-26T00:00:00+01:00") - timedelta(seconds=1),
    )  # fmt: skip
    assert len(spring) == 23 and len(autumn) == 25
    for times in (spring, autumn):
        assert all(b - a == timedelta(hours=1) for a, b in itertools.pairwise(times))


def test_a_job_with_a_fixed_hour_in_the_repeated_hour_runs_once_per_wall_clock_time() -> None:
    # 02:00, 02:20, 02:40 of 25 October in Berlin, each once (not again an hour later).
    every_20 = parse_cron("*/20 2 * * *")
    times = fires_between(
        every_20, BERLIN, at("2026-10-25T00:00:00+02:00"), at("2026-10-25T12:00:00+01:00")
    )
    assert [t.astimezone(BERLIN).strftime("%H:%M%z") for t in times] == [
        "02:00+0200",
        "02:20+0200",
        "02:40+0200",
    ]


# -- misfires -------------------------------------------------------------------------------


def test_ten_minutes_down_run_latest_fires_the_latest_missed_time_once_skip_none() -> None:
    minutely = parse_cron("* * * * *")
    utc = parse_timezone("UTC")
    due = at("2026-06-01T12:00:00+00:00")
    back = due + timedelta(minutes=9, seconds=45)  # ten fire times missed, the last 45 s ago
    latest = plan(minutely, utc, due, back, MisfirePolicy.RUN_LATEST, GRACE, 100)
    assert latest.fires == (due + timedelta(minutes=9),)
    assert latest.first_missed == due and latest.latest_missed == due + timedelta(minutes=9)
    assert latest.next_fire_at == due + timedelta(minutes=10)
    skipped = plan(minutely, utc, due, back, MisfirePolicy.SKIP, GRACE, 100)
    assert skipped.fires == () and skipped.missed
    assert skipped.next_fire_at == due + timedelta(minutes=10)


def test_a_fire_a_few_seconds_late_is_not_a_misfire() -> None:
    minutely = parse_cron("* * * * *")
    utc = parse_timezone("UTC")
    due = at("2026-06-01T12:00:00+00:00")
    for late in (timedelta(0), timedelta(seconds=5), GRACE):
        decided = plan(minutely, utc, due, due + late, MisfirePolicy.SKIP, GRACE, 100)
        assert decided.fires == (due,) and not decided.missed, late
    early = plan(minutely, utc, due, due - timedelta(seconds=1), MisfirePolicy.SKIP, GRACE, 100)
    assert early.fires == () and early.next_fire_at == due


def test_fire_times_within_the_grace_all_fire_in_order_missed_ones_follow_the_policy() -> None:
    every_second = parse_cron("* * * * * *", seconds=True)
    utc = parse_timezone("UTC")
    due = at("2026-06-01T12:00:00+00:00")
    now = due + timedelta(seconds=40)  # 0..9 s are missed, 10..40 s within the grace
    for policy, missed_fired in ((MisfirePolicy.SKIP, ()), (MisfirePolicy.RUN_LATEST, (9,))):
        decided = plan(every_second, utc, due, now, policy, GRACE, 100)
        offsets = tuple(int((t - due).total_seconds()) for t in decided.fires)
        assert offsets == (*missed_fired, *range(10, 41)), policy
        assert decided.next_fire_at == due + timedelta(seconds=41)
    # At most `limit` in one round; the next round goes on from there.
    capped = plan(every_second, utc, due + timedelta(seconds=10), now, MisfirePolicy.SKIP, GRACE, 5)
    assert len(capped.fires) == 5 and capped.next_fire_at == due + timedelta(seconds=15)


def test_a_year_down_costs_what_a_minute_down_does() -> None:
    minutely = parse_cron("* * * * *")
    due = at("2025-06-01T12:00:00+00:00")
    started = time.monotonic()
    back = due + timedelta(days=365, seconds=45)
    decided = plan(minutely, BERLIN, due, back, MisfirePolicy.RUN_LATEST, GRACE, 100)
    assert time.monotonic() - started < 1.0
    assert decided.fires == (due + timedelta(days=365),)


# -- keys -------------------------------------------------------------------------------------


def test_keys_name_the_schedule_and_the_fire_time_and_sort_by_time() -> None:
    schedule_id = uuid.UUID("01890000-0000-7000-8000-000000000001")
    fire = at("2026-03-29T01:00:00+00:00")
    key = fire_key(schedule_id, fire)
    assert key == f"schedule:{schedule_id}:2026-03-29T01:00:00+00:00"
    assert read_key(key) == (fire, False)
    manual = manual_key(schedule_id, fire + timedelta(seconds=0.5), "abc")
    assert read_key(manual) == (fire + timedelta(seconds=0.5), True)
    low, high = key_range(schedule_id)
    later = fire_key(schedule_id, fire + timedelta(seconds=1))
    assert low < key < manual < later < high  # byte order: fires and manual runs by time
    other = fire_key(uuid.UUID("01890000-0000-7000-8000-000000000002"), fire)
    assert not low <= other < high
