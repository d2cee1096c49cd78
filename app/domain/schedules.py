"""Schedules: cron expressions in a time zone, their fire times, and what a late duty does
about fire times it missed. Pure functions of their arguments (the clock included), no I/O.

Cron arithmetic is croniter's; this module decides what croniter leaves open:

- Five fields (minute hour day-of-month month day-of-week) or an alias (`@hourly`, `@daily`,
  ...). A sixth field, seconds (croniter's order: after day-of-week), only where the caller
  allows it (SCHEDULE_SECONDS_FIELD). croniter's random (`R`) and hashed (`H`) fields are
  refused: every runner must compute the same fire times.
- Fire times are computed in the schedule's time zone and stored in UTC. On the day clocks
  spring forward, a wall-clock time that does not exist (02:30 in a zone that jumps from 02:00
  to 03:00) fires once, when the clocks jump (03:00): croniter's answer, kept. On the day
  clocks fall back, a wall-clock time that happens twice (the repeated hour) fires at its first
  occurrence only, unless the expression runs every hour, where the repeated hour is an hour
  of its own: croniter would fire both, so the second is dropped here.
- A fire time more than the grace behind the clock is missed: `skip` fires none of the missed
  ones, `run_latest` fires the latest of them, once. Fire times within the grace always fire.
"""

from __future__ import annotations

import functools
import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any
from zoneinfo import ZoneInfo, available_timezones

from croniter import CroniterError, croniter

# The aliases croniter knows, written out: stored as given, read as these five fields.
ALIASES = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
MAX_CRON_LENGTH = 120
# Zone names that name no place: the host's own zone, and tzdata's placeholder.
_NOT_ZONES = frozenset({"localtime", "Factory"})
_RANDOM = re.compile(r"^[HR](\(|$)", re.IGNORECASE)
_TINY = timedelta(microseconds=1)
# Candidates one search may pass over: the repeated hour of a fall-back day, second by second
# for an expression with seconds, is 3,600 of them.
_SEARCH = 10_000
# Prefix of the idempotency keys of a schedule's jobs (schedule:<id>:...).
KEY_PREFIX = "schedule:"
# ISO 8601 in UTC. A manual run's time has microseconds: "+" sorts before ".", so in byte order
# a fire time and a manual run in the same second stay in time order.
_FIRE_FORMAT = "%Y-%m-%dT%H:%M:%S+00:00"
_MANUAL_FORMAT = "%Y-%m-%dT%H:%M:%S.%f+00:00"


class MisfirePolicy(StrEnum):
    SKIP = "skip"  # missed fire times are dropped; the next one in the future fires
    RUN_LATEST = "run_latest"  # the latest missed fire time fires once; older ones are dropped


class CronError(ValueError):
    """An expression that is not one this module takes; the message says why."""


@dataclass(frozen=True)
class Cron:
    expression: str  # as given: five fields, six with seconds, or an alias
    fields: str  # what croniter reads
    every_hour: bool  # the hour field matches every hour

    @property
    def has_seconds(self) -> bool:
        return len(self.fields.split()) == 6


def parse_cron(expression: str, *, seconds: bool = False) -> Cron:
    """The expression, checked: its syntax, and that it fires at least once. `seconds`: a
    sixth field, seconds, is taken."""
    text = " ".join(expression.split())
    if not text:
        raise CronError("empty: give five fields (minute hour day month weekday) or an alias")
    if len(text) > MAX_CRON_LENGTH:
        raise CronError(f"longer than {MAX_CRON_LENGTH} characters")
    if text.startswith("@"):
        fields = ALIASES.get(text.lower())
        if fields is None:
            raise CronError(f"unknown alias {text[:20]!r}: use one of {', '.join(ALIASES)}")
    else:
        fields = text
    parts = fields.split(" ")
    allowed = (5, 6) if seconds else (5,)
    if len(parts) not in allowed:
        wanted = "five or six (with seconds)" if seconds else "five"
        raise CronError(
            f"{len(parts)} fields: give {wanted} (minute hour day month weekday) or an alias"
        )
    for part in parts:
        if any(_RANDOM.match(token) for token in re.split(r"[,/-]", part)):
            raise CronError("random (R) and hashed (H) fields are not supported")
    try:
        iterator = croniter(fields, datetime(2000, 1, 1, tzinfo=UTC))
        hours = iterator.expanded[1]
        iterator.get_next(datetime)
    except CroniterError as exc:
        if "failed to find next date" in str(exc):
            raise CronError("never fires (no date matches it)") from None
        raise CronError(f"not a cron expression: {exc}") from None
    except (ValueError, TypeError, OverflowError, IndexError, KeyError) as exc:
        raise CronError(f"not a cron expression: {exc}") from None
    every_hour = hours == ["*"] or len(hours) == 24
    return Cron(expression=text, fields=fields, every_hour=every_hour)


@functools.cache
def _zone_names() -> frozenset[str]:
    return frozenset(available_timezones()) - _NOT_ZONES


def parse_timezone(name: str) -> ZoneInfo:
    """An IANA time zone by its name (`Europe/Berlin`, `UTC`); CronError for anything else."""
    if name not in _zone_names():
        raise CronError(f"unknown time zone {name[:64]!r}: use an IANA name like Europe/Berlin")
    return ZoneInfo(name)


def _repeated(moment: datetime) -> bool:
    """Whether a local time is the second occurrence of a wall-clock time: clocks fell back,
    so the offset of its first occurrence is larger. (A time in a spring-forward gap has a
    smaller first offset: it does not happen at all, and is not a repeat.)"""
    first, second = moment.replace(fold=0).utcoffset(), moment.replace(fold=1).utcoffset()
    if first is None or second is None or first <= second:
        return False
    return moment.utcoffset() == second


def next_fire(cron: Cron, zone: ZoneInfo, after: datetime) -> datetime:
    """The first fire time strictly after `after`, in UTC. CronError when there is none."""
    start = after.astimezone(zone)
    try:
        iterator = croniter(cron.fields, start)
        for _ in range(_SEARCH):
            candidate: datetime = iterator.get_next(datetime)
            moment = candidate.astimezone(UTC)
            if moment <= after:  # never go back: a transition may confuse the search
                continue
            if not cron.every_hour and _repeated(candidate):
                continue
            return moment
    except CroniterError:
        pass
    raise CronError("never fires again")


def previous_fire(cron: Cron, zone: ZoneInfo, before: datetime) -> datetime | None:
    """The last fire time strictly before `before`, in UTC; None when there is none."""
    try:
        iterator = croniter(cron.fields, before.astimezone(zone))
        for _ in range(_SEARCH):
            candidate: datetime = iterator.get_prev(datetime)
            moment = candidate.astimezone(UTC)
            if moment >= before:
                continue
            if not cron.every_hour and _repeated(candidate):
                continue
            return moment
    except CroniterError:
        pass
    return None


def upcoming(cron: Cron, zone: ZoneInfo, start: datetime, count: int) -> list[datetime]:
    """`count` fire times from `start` (included when it is one), in UTC."""
    times: list[datetime] = []
    moment = start - _TINY
    while len(times) < count:
        try:
            moment = next_fire(cron, zone, moment)
        except CronError:
            break
        times.append(moment)
    return times


@dataclass(frozen=True)
class FirePlan:
    """What one round does to one due schedule."""

    fires: tuple[datetime, ...]  # fire times to create jobs for, oldest first, in UTC
    next_fire_at: datetime  # the first fire time not fired: where the schedule moves to
    first_missed: datetime | None = None  # the missed fire times, when some were missed
    latest_missed: datetime | None = None

    @property
    def missed(self) -> bool:
        return self.first_missed is not None


def plan(
    cron: Cron,
    zone: ZoneInfo,
    next_fire_at: datetime,
    now: datetime,
    policy: MisfirePolicy,
    grace: timedelta,
    limit: int,
) -> FirePlan:
    """The fires a round makes at `now` for a schedule due at `next_fire_at`.

    Fire times from `now - grace` to `now` are on time, each fired once (at most `limit` in one
    round; the rest wait for the next round). Older ones are missed, and the policy decides:
    `skip` fires none of them, `run_latest` the latest one. The search for the missed ones
    never walks them one by one, so a schedule that was down for a year costs what one that
    was down for a minute does."""
    if next_fire_at > now:
        return FirePlan((), next_fire_at)
    cutoff = now - grace
    fires: list[datetime] = []
    first_missed = latest_missed = None
    moment = next_fire_at
    if next_fire_at < cutoff:
        first_missed = next_fire_at
        latest_missed = max(previous_fire(cron, zone, cutoff) or next_fire_at, next_fire_at)
        if policy is MisfirePolicy.RUN_LATEST:
            fires.append(latest_missed)
        moment = next_fire(cron, zone, cutoff - _TINY)
    while moment <= now and len(fires) < limit:
        fires.append(moment)
        moment = next_fire(cron, zone, moment)
    return FirePlan(tuple(fires), moment, first_missed, latest_missed)


def fire_key(schedule_id: uuid.UUID, fire_time: datetime) -> str:
    """The idempotency key of the job of one fire time: one job per schedule and fire time,
    whichever runner gets there, however many times."""
    return f"{KEY_PREFIX}{schedule_id}:{fire_time.astimezone(UTC).strftime(_FIRE_FORMAT)}"


def manual_key(schedule_id: uuid.UUID, at: datetime, nonce: str) -> str:
    """The idempotency key of a "run now": its time first, so that a schedule's keys sort by
    time, fires and manual runs together."""
    stamp = at.astimezone(UTC).strftime(_MANUAL_FORMAT)
    return f"{KEY_PREFIX}{schedule_id}:{stamp}:manual:{nonce}"


def key_range(schedule_id: uuid.UUID) -> tuple[str, str]:
    """Bounds of the keys of one schedule's jobs, in byte order: [low, high)."""
    stem = f"{KEY_PREFIX}{schedule_id}"
    return stem + ":", stem + ";"  # ';' follows ':' in ASCII


def read_key(key: str) -> tuple[datetime | None, bool]:
    """(the fire time a key names, whether it is a manual run) of a schedule job's key."""
    rest = key.split(":", 2)[2] if key.count(":") >= 2 else ""
    manual = ":manual:" in rest
    stamp = rest.split(":manual:", 1)[0] if manual else rest
    for form in (_FIRE_FORMAT, _MANUAL_FORMAT):
        try:
            return datetime.strptime(stamp, form).replace(tzinfo=UTC), manual
        except ValueError:
            continue
    return None, manual


@dataclass(frozen=True, slots=True)
class ScheduleRecord:
    """One row of `schedules`."""

    id: uuid.UUID
    tenant: str
    name: str
    cron: str
    timezone: str
    task: str
    payload: Any
    queue: str
    priority: int
    max_retries: int | None  # None: the server's DEFAULT_MAX_RETRIES when it fires
    timeout_seconds: int | None  # None: the server's DEFAULT_TIMEOUT_SECONDS when it fires
    enabled: bool
    misfire_policy: MisfirePolicy
    next_fire_at: datetime
    last_fired_at: datetime | None
    created_at: datetime
    updated_at: datetime
