"""Schedules: a tenant's cron schedules, and the fires that make their jobs.

A fire makes its job the way a submit does (the jobs service's defaults and limits, the same
insert) with the idempotency key `schedule:<id>:<fire time>`, in the transaction that moves
the schedule's `next_fire_at` on: both commit or neither does. So however many duty runners
look, each fire time makes one job (a second insert of its key does nothing), and a runner
that dies mid-fire leaves the schedule due for the next round. Jobs reach Redis after the
commit, as submitted ones do.

Changes (create, update, pause, resume, delete, run now) are audited in their transaction.
A producer's key sees and changes its own tenant's schedules only; another tenant's is
unknown (404). An admin's key reaches every tenant's.
"""

from __future__ import annotations

import logging
import secrets
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from pydantic import ValidationError
from sqlalchemy.orm import Session
from uuid_utils.compat import uuid7

from app.domain.audit import AuditAction
from app.domain.cursor import decode_position, encode_position
from app.domain.errors import InvalidRequest, ScheduleNameTaken, ScheduleNotFound
from app.domain.principal import Principal
from app.domain.records import JobRecord
from app.domain.schedule_schemas import (
    ScheduleCreate,
    ScheduleDetail,
    ScheduleJob,
    ScheduleOut,
    SchedulePage,
    ScheduleUpdate,
)
from app.domain.schedules import (
    Cron,
    CronError,
    FirePlan,
    ScheduleRecord,
    fire_key,
    manual_key,
    next_fire,
    parse_cron,
    parse_timezone,
    plan,
    read_key,
    upcoming,
)
from app.domain.schemas import JobCreate, JobOut
from app.logging import bind
from app.metrics import metrics
from app.services import audit
from app.services.context import Context
from app.services.jobs import announce_after_commit, job_defaults, new_job
from app.store import jobs as job_store
from app.store import schedules as store

log = logging.getLogger(__name__)

UPCOMING = 5  # fire times a schedule's detail shows
MAX_UPCOMING = 50
RECENT_JOBS = 10  # jobs a schedule's detail shows
# Schedules one transaction of the duty fires (each its whole plan), and at most this many
# transactions per round.
FIRE_BATCH = 100
FIRE_BATCHES = 50
# Fire times one schedule fires in one round: a schedule a second behind by a minute fires
# them all; more (a long grace) go on in the next round.
FIRES_PER_ROUND = 100


def _now() -> datetime:
    return datetime.now(UTC)


def _invalid(field: str, message: str) -> InvalidRequest:
    return InvalidRequest(
        f"{field}: {message}",
        errors=[{"loc": ["body", field], "msg": message, "type": "value_error"}],
    )


def _cron(ctx: Context, expression: str) -> Cron:
    try:
        cron = parse_cron(expression, seconds=ctx.settings.schedule_seconds_field)
    except CronError as exc:
        raise _invalid("cron", str(exc)) from None
    return cron


def _zone(name: str) -> ZoneInfo:
    try:
        return parse_timezone(name)
    except CronError as exc:
        raise _invalid("timezone", str(exc)) from None


def _first_fire(cron: Cron, zone: ZoneInfo, now: datetime) -> datetime:
    try:
        return next_fire(cron, zone, now)
    except CronError as exc:
        raise _invalid("cron", str(exc)) from None


def shape(schedule: ScheduleRecord) -> ScheduleOut:
    return ScheduleOut(
        id=schedule.id,
        tenant=schedule.tenant,
        name=schedule.name,
        cron=schedule.cron,
        timezone=schedule.timezone,
        task=schedule.task,
        payload=schedule.payload,
        queue=schedule.queue,
        priority=schedule.priority,
        max_retries=schedule.max_retries,
        timeout_seconds=schedule.timeout_seconds,
        enabled=schedule.enabled,
        misfire_policy=schedule.misfire_policy,
        next_fire_at=schedule.next_fire_at if schedule.enabled else None,
        last_fired_at=schedule.last_fired_at,
        created_at=schedule.created_at,
        updated_at=schedule.updated_at,
    )


def _target(schedule: ScheduleRecord, **more: Any) -> dict[str, Any]:
    """An audit event's target: the schedule, its tenant (an admin's key has another) and name."""
    return {
        "schedule_id": str(schedule.id),
        "tenant": schedule.tenant,
        "name": schedule.name,
        **more,
    }


def _logged(action: str, schedule: ScheduleRecord, message: str) -> None:
    bind(tenant=schedule.tenant)
    log.info(message, extra={"action": action, "schedule_id": str(schedule.id)})


def create(
    ctx: Context, principal: Principal, request: ScheduleCreate, now: datetime | None = None
) -> ScheduleOut:
    cron = _cron(ctx, request.cron)
    zone = _zone(request.timezone)
    new = store.NewSchedule(
        id=uuid7(),
        tenant=principal.tenant,
        name=request.name,
        cron=cron.expression,
        timezone=request.timezone,
        task=request.task,
        payload=request.payload,
        queue=request.queue,
        priority=request.priority,
        max_retries=request.max_retries,
        timeout_seconds=request.timeout_seconds,
        enabled=request.enabled,
        misfire_policy=request.misfire_policy,
        next_fire_at=_first_fire(cron, zone, now or _now()),
    )
    with ctx.db.transaction() as session:
        schedule = store.insert_schedule(session, new)
        if schedule is None:
            raise ScheduleNameTaken(f"this tenant already has a schedule named {request.name!r}")
        target = _target(schedule, cron=schedule.cron, timezone=schedule.timezone)
        audit.record(session, principal, AuditAction.SCHEDULE_CREATE, target)
    _logged("schedule_created", schedule, "schedule created")
    return shape(schedule)


def list_schedules(
    ctx: Context, principal: Principal, limit: int, cursor: str | None
) -> SchedulePage:
    """Oldest first: a producer's key its tenant's schedules, an admin's every tenant's."""
    after = decode_position(cursor, uuid.UUID) if cursor else None
    with ctx.db.transaction() as session:
        rows = store.list_schedules(session, principal.tenant_filter, limit, after)
    items = [shape(row) for row in rows]
    next_cursor = encode_position(str(items[-1].id)) if len(items) == limit else None
    return SchedulePage(items=items, limit=limit, next_cursor=next_cursor)


def _job_of(job: JobRecord) -> ScheduleJob:
    fire_time, manual = read_key(job.idempotency_key or "")
    return ScheduleJob(
        id=job.id,
        status=job.status,
        fire_time=None if manual else fire_time,
        manual=manual,
        idempotency_key=job.idempotency_key or "",
        created_at=job.created_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
    )


def get(
    ctx: Context,
    principal: Principal,
    schedule_id: uuid.UUID,
    count: int = UPCOMING,
    jobs: int = RECENT_JOBS,
) -> ScheduleDetail:
    """The schedule, its next `count` fire times and its latest `jobs` jobs."""
    with ctx.db.transaction() as session:
        schedule = store.get_schedule(session, schedule_id, principal.tenant_filter)
        if schedule is None:
            raise ScheduleNotFound()
        recent = store.recent_jobs(session, schedule.tenant, schedule.id, jobs)
    times: list[datetime] = []
    if schedule.enabled:
        try:
            cron = parse_cron(schedule.cron, seconds=True)
            times = upcoming(cron, parse_timezone(schedule.timezone), schedule.next_fire_at, count)
        except CronError:
            times = []
    return ScheduleDetail(
        **shape(schedule).model_dump(),
        upcoming=times,
        recent_jobs=[_job_of(job) for job in recent],
    )


def _locked(session: Session, principal: Principal, schedule_id: uuid.UUID) -> ScheduleRecord:
    schedule = store.lock_schedule(session, schedule_id, principal.tenant_filter)
    if schedule is None:
        raise ScheduleNotFound()
    return schedule


def update(
    ctx: Context,
    principal: Principal,
    schedule_id: uuid.UUID,
    request: ScheduleUpdate,
    now: datetime | None = None,
) -> ScheduleOut:
    """Change the fields given. A new cron expression or time zone moves the next fire time
    to the first one after now (fire times of the old expression still due are not fired)."""
    changes = request.changes()
    cron = _cron(ctx, changes["cron"]) if "cron" in changes else None
    if cron is not None:
        changes["cron"] = cron.expression
    zone = _zone(changes["timezone"]) if "timezone" in changes else None
    with ctx.db.transaction() as session:
        schedule = _locked(session, principal, schedule_id)
        if cron is not None or zone is not None:
            cron = cron or _cron_of(schedule)
            zone = zone or _zone(schedule.timezone)
            changes["next_fire_at"] = _first_fire(cron, zone, now or _now())
        updated = store.update_schedule(session, schedule.id, changes)
        if updated is None:
            raise ScheduleNameTaken(f"this tenant already has a schedule named {request.name!r}")
        target = _target(updated, changed=sorted(request.changes()))
        audit.record(session, principal, AuditAction.SCHEDULE_UPDATE, target)
    _logged("schedule_updated", updated, "schedule updated")
    return shape(updated)


def _cron_of(schedule: ScheduleRecord) -> Cron:
    """The stored expression (accepted when it was written, seconds or not)."""
    try:
        return parse_cron(schedule.cron, seconds=True)
    except CronError as exc:
        raise _invalid("cron", str(exc)) from None


def pause(ctx: Context, principal: Principal, schedule_id: uuid.UUID) -> ScheduleOut:
    """No fire until resumed. Pausing a paused schedule changes nothing and records nothing."""
    with ctx.db.transaction() as session:
        schedule = _locked(session, principal, schedule_id)
        if not schedule.enabled:
            return shape(schedule)
        schedule = _set(session, schedule, {"enabled": False})
        audit.record(session, principal, AuditAction.SCHEDULE_PAUSE, _target(schedule))
    _logged("schedule_paused", schedule, "schedule paused")
    return shape(schedule)


def resume(
    ctx: Context, principal: Principal, schedule_id: uuid.UUID, now: datetime | None = None
) -> ScheduleOut:
    """Fire again, from the first fire time after now: the fire times of the pause are not
    fired. Resuming a running schedule changes nothing and records nothing."""
    with ctx.db.transaction() as session:
        schedule = _locked(session, principal, schedule_id)
        if schedule.enabled:
            return shape(schedule)
        first = _first_fire(_cron_of(schedule), _zone(schedule.timezone), now or _now())
        schedule = _set(session, schedule, {"enabled": True, "next_fire_at": first})
        audit.record(session, principal, AuditAction.SCHEDULE_RESUME, _target(schedule))
    _logged("schedule_resumed", schedule, "schedule resumed")
    return shape(schedule)


def _set(session: Session, schedule: ScheduleRecord, changes: dict[str, Any]) -> ScheduleRecord:
    updated = store.update_schedule(session, schedule.id, changes)
    assert updated is not None  # only a new name can be refused
    return updated


def delete(ctx: Context, principal: Principal, schedule_id: uuid.UUID) -> None:
    """Delete the schedule; the jobs it made stay, as any job does."""
    with ctx.db.transaction() as session:
        schedule = _locked(session, principal, schedule_id)
        store.delete_schedule(session, schedule.id, None)
        audit.record(session, principal, AuditAction.SCHEDULE_DELETE, _target(schedule))
    _logged("schedule_deleted", schedule, "schedule deleted")


def _request(schedule: ScheduleRecord, key: str) -> JobCreate:
    """The job request of the schedule's template, checked as the API checks a submit."""
    return JobCreate(
        task=schedule.task,
        payload=schedule.payload,
        queue=schedule.queue,
        priority=schedule.priority,
        idempotency_key=key,
        max_retries=schedule.max_retries,
        timeout_seconds=schedule.timeout_seconds,
    )


def run_now(ctx: Context, principal: Principal, schedule_id: uuid.UUID) -> JobOut:
    """One job of the schedule's template now, paused or not, beside its fire times."""
    with ctx.db.transaction() as session:
        schedule = _locked(session, principal, schedule_id)
        key = manual_key(schedule.id, _now(), secrets.token_hex(6))
        new = new_job(job_defaults(ctx.settings), schedule.tenant, _request(schedule, key))
        (job,) = job_store.insert_jobs(session, [new]).values()
        target = _target(schedule, job_ids=[str(job.id)])
        audit.record(session, principal, AuditAction.SCHEDULE_RUN, target)
    assert isinstance(job, JobRecord)
    announce_after_commit(ctx, [job])
    _count_created(ctx, [job])
    _logged("schedule_run", schedule, "schedule run now")
    return JobOut.model_validate(job)


# -- the duty's round ------------------------------------------------------------------------


def fire_due(ctx: Context, now: datetime) -> int:
    """Fire every schedule due at `now`: jobs for its fire times, its next fire time moved
    on, one transaction per batch of schedules. Returns the jobs made."""
    made = 0
    for _ in range(FIRE_BATCHES):
        created, due = _fire_batch(ctx, now)
        made += created
        if due < FIRE_BATCH:
            break
    return made


def _fire_batch(ctx: Context, now: datetime) -> tuple[int, int]:
    """(jobs made, schedules that were due) of one transaction."""
    grace = timedelta(seconds=ctx.settings.schedule_misfire_grace_seconds)
    plans: list[tuple[ScheduleRecord, FirePlan]] = []
    with ctx.db.transaction() as session:
        due = store.lock_due(session, now, FIRE_BATCH)
        news: list[job_store.NewJob] = []
        for schedule in due:
            planned = _plan(schedule, now, grace)
            if planned is None:  # it can never fire: stopped, so it is not due every round
                store.update_schedule(session, schedule.id, {"enabled": False})
                continue
            try:
                requests = [_request(schedule, fire_key(schedule.id, t)) for t in planned.fires]
            except ValidationError as exc:
                _stopped(schedule, f"its job template is not valid: {exc.error_count()} errors")
                store.update_schedule(session, schedule.id, {"enabled": False})
                continue
            defaults = job_defaults(ctx.settings)
            news += [new_job(defaults, schedule.tenant, request) for request in requests]
            last = planned.fires[-1] if planned.fires else None
            store.advance(session, schedule.id, planned.next_fire_at, last)
            plans.append((schedule, planned))
        # A key already taken (the fire was made: a producer's own job used its key) inserts
        # nothing: never a second job for one fire time.
        inserted = job_store.insert_jobs(session, news) if news else {}
    jobs = [job for job in inserted.values() if isinstance(job, JobRecord)]
    announce_after_commit(ctx, jobs)
    _count_created(ctx, jobs)
    for schedule, planned in plans:
        _log_fires(schedule, planned)
    return len(jobs), len(due)


def _plan(schedule: ScheduleRecord, now: datetime, grace: timedelta) -> FirePlan | None:
    try:
        cron = parse_cron(schedule.cron, seconds=True)
        zone = parse_timezone(schedule.timezone)
        return plan(
            cron, zone, schedule.next_fire_at, now, schedule.misfire_policy, grace, FIRES_PER_ROUND
        )
    except CronError as exc:
        _stopped(schedule, str(exc))
        return None


def _stopped(schedule: ScheduleRecord, reason: str) -> None:
    log.error(
        "schedule paused: it cannot fire",
        extra={
            "action": "schedule_stopped",
            "schedule_id": str(schedule.id),
            "tenant": schedule.tenant,
            "error": reason,
        },
    )


def _count_created(ctx: Context, jobs: list[JobRecord]) -> None:
    counts = ctx.metric_labels.job_counts(Counter((job.queue, job.task) for job in jobs))
    created = metrics().jobs_created
    for (queue, task), count in counts.items():
        created.labels(queue, task).inc(count)


def _log_fires(schedule: ScheduleRecord, planned: FirePlan) -> None:
    ids = {"schedule_id": str(schedule.id), "tenant": schedule.tenant}
    if planned.missed:
        log.warning(
            "schedule missed fire times",
            extra={
                "action": "schedule_misfired",
                **ids,
                "policy": schedule.misfire_policy.value,
                "first_missed": planned.first_missed,
                "latest_missed": planned.latest_missed,
            },
        )
    if planned.fires:
        log.info(
            "schedule fired",
            extra={
                "action": "schedule_fired",
                **ids,
                "count": len(planned.fires),
                "fire_times": [t.isoformat() for t in planned.fires[:20]],
                "next_fire_at": planned.next_fire_at.isoformat(),
            },
        )
