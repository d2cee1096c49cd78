"""The state of each queue at a glance, and why a job is waiting. Postgres says what jobs there
are and what finished in the last hour (from the per-minute counts the stats duty keeps, so the
figures survive restarts); Redis says what is paused, what ids are ready, and who is alive."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

from app.dispatch import fleet, ready
from app.dispatch.ready import Place
from app.domain.errors import Forbidden, InvalidTransition, JobNotFound
from app.domain.filters import TOTAL_CAP
from app.domain.overview import QueueOverview, WaitCause, WaitReason
from app.domain.records import JobRecord
from app.domain.states import JobStatus
from app.services.auth import Principal
from app.services.context import Context
from app.services.fleet import served_queues
from app.store import jobs as job_store
from app.store import maintenance as maintenance_store
from app.store import stats as stats_store

# The last hour: the current minute and the 59 before it.
HOUR_MINUTES = 60
WAITING = frozenset({JobStatus.QUEUED, JobStatus.SCHEDULED})


def tenant_in_view(principal: Principal, tenant: str | None) -> str | None:
    """Whose jobs the key sees: a producer its own tenant's; an admin every tenant's (None),
    or the tenant it names."""
    if principal.is_admin:
        return tenant
    if tenant not in (None, principal.tenant):
        raise Forbidden("only an admin key may look at another tenant's jobs")
    return principal.tenant


def overview(ctx: Context, principal: Principal, tenant: str | None = None) -> list[QueueOverview]:
    """Every queue with jobs in play, failed jobs, or jobs finished in the last hour, by name;
    for an admin looking at every tenant, also the paused queues and those the fleet serves."""
    scope = tenant_in_view(principal, tenant)
    with ctx.db.transaction() as session:
        now = job_store.database_now(session)
        live = stats_store.live_counts(session, scope)
        if scope is None:
            oldest = maintenance_store.oldest_queued_by_queue(session)
        else:
            oldest = stats_store.oldest_queued_of_tenant(session, scope)
        since = now - timedelta(minutes=HOUR_MINUTES - 1)
        finished = stats_store.finished_since(session, since, scope)
    client, keys = ctx.redis.client, ctx.keys
    paused = fleet.paused_queues(client, keys)
    names = set(live) | set(finished)
    if scope is None:
        names |= paused | served_queues(fleet.read_heartbeats(client, keys))
    queues = sorted(names)
    if scope is None:
        in_redis = fleet.queue_lengths(client, keys, queues)
    else:
        in_redis = ready.tenant_lengths(client, keys, queues, scope)
    return [
        QueueOverview(
            **_queue(name, live.get(name, {}), oldest.get(name), now, finished.get(name, (0, 0))),
            paused=name in paused,
            ready_in_redis=in_redis[name],
        )
        for name in queues
    ]


def _queue(
    name: str,
    live: dict[str, int],
    oldest: datetime | None,
    now: datetime,
    finished: tuple[int, int],
) -> dict[str, Any]:
    completed, failed = finished
    return {
        "queue": name,
        "jobs": {status.value: live.get(status.value, 0) for status in stats_store.LIVE},
        "oldest_waiting_seconds": None
        if oldest is None
        else max(0.0, (now - oldest).total_seconds()),
        "completed_last_hour": completed,
        "failed_last_hour": failed,
        "failure_rate": failed / (completed + failed) if completed + failed else None,
    }


def why_waiting(ctx: Context, principal: Principal, job_id: uuid.UUID) -> WaitReason | None:
    """Why a queued or scheduled job has not started (every cause that holds); None for a job
    in any other status. A producer key learns of its own tenant's jobs only: the count of
    jobs ahead is of its tenant's, and another tenant's job is unknown (JobNotFound)."""
    with ctx.db.transaction() as session:
        job = job_store.get_job(session, job_id, principal.tenant_filter)
        if job is None:
            raise JobNotFound()
        if job.status not in WAITING:
            return None
        now = job_store.database_now(session)
        ahead = 0
        if job.status is JobStatus.QUEUED:
            ahead = stats_store.jobs_ahead(session, job, principal.tenant_filter, TOTAL_CAP)
    client, keys = ctx.redis.client, ctx.keys
    reasons: list[WaitCause] = []
    if job.queue in fleet.paused_queues(client, keys):
        reasons.append(WaitCause.PAUSED)
    if job.queue not in served_queues(fleet.read_heartbeats(client, keys)):
        reasons.append(WaitCause.NO_WORKER)
    if job.status is JobStatus.SCHEDULED and job.run_at > now:
        reasons.append(WaitCause.RUN_AT)
    if ahead:
        reasons.append(WaitCause.BEHIND)
    if job.status is JobStatus.QUEUED and not ready.holds(
        client, keys, Place(job.queue, job.priority, job.tenant), str(job.id)
    ):
        reasons.append(WaitCause.NOT_IN_REDIS)
    sweep = ctx.settings.sweep_after_seconds
    return WaitReason(
        job_id=job.id,
        status=job.status,
        queue=job.queue,
        reasons=reasons,
        explanations=[_explain(cause, job, now, ahead, sweep) for cause in reasons],
        run_at=job.run_at if WaitCause.RUN_AT in reasons else None,
        behind=min(ahead, TOTAL_CAP) if ahead else None,
        behind_exact=ahead <= TOTAL_CAP,
        sweep_after_seconds=sweep if WaitCause.NOT_IN_REDIS in reasons else None,
    )


def waiting(ctx: Context, principal: Principal, job_id: uuid.UUID) -> WaitReason:
    """`why_waiting`, for a job that must be waiting: InvalidTransition when it is not."""
    reason = why_waiting(ctx, principal, job_id)
    if reason is not None:
        return reason
    with ctx.db.transaction() as session:
        status = job_store.job_status(session, job_id, principal.tenant_filter)
    if status is None:
        raise JobNotFound()
    raise InvalidTransition(f"the job is {status}: it is not waiting", job_status=status)


def _explain(cause: WaitCause, job: JobRecord, now: datetime, ahead: int, sweep: float) -> str:
    if cause is WaitCause.PAUSED:
        return f"Queue '{job.queue}' is paused: no worker takes its jobs until it is resumed."
    if cause is WaitCause.NO_WORKER:
        return (
            f"No live native worker serves queue '{job.queue}'. HTTP workers are not tracked: "
            "one may still lease it."
        )
    if cause is WaitCause.RUN_AT:
        seconds = (job.run_at - now).total_seconds()
        return f"It is scheduled for {job.run_at.isoformat()}, in {seconds:,.0f} s."
    if cause is WaitCause.BEHIND:
        count = f"{TOTAL_CAP:,} or more" if ahead > TOTAL_CAP else f"{ahead:,}"
        return (
            f"{count} queued jobs of queue '{job.queue}' go first: a higher priority, or "
            f"priority {job.priority} and ready earlier."
        )
    return (
        "Its id is missing from its ready list in Redis; the reconciler pushes it again "
        f"within {sweep:g} s."
    )
