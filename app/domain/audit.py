"""The audit log: who changed what, when, under which request. Pure data, no I/O.

An event is written in the transaction of the change it records (app/services/audit.py), so a
change without its event, or an event without its change, is never committed. Changes that
live in Redis (a queue's pause, a host's size) are recorded in Postgres first, then made.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any


class AuditAction(StrEnum):
    JOB_CANCEL = "job.cancel"  # one job: cancelled, or its cancellation requested
    JOB_RETRY = "job.retry"  # one failed or cancelled job back to queued
    JOB_DELETE = "job.delete"  # one job deleted (from the jobs or the dead-letter routes)
    JOB_REPLAY = "job.replay"  # dead-lettered jobs back to queued: one, or many by filter
    BULK_START = "bulk.start"  # a bulk operation started: its action and filter
    BULK_CANCEL = "bulk.cancel"  # a bulk operation stopped before its end
    SCHEDULE_CREATE = "schedule.create"
    SCHEDULE_UPDATE = "schedule.update"  # its fields changed: the names of the fields
    SCHEDULE_PAUSE = "schedule.pause"
    SCHEDULE_RESUME = "schedule.resume"
    SCHEDULE_DELETE = "schedule.delete"
    SCHEDULE_RUN = "schedule.run"  # "run now": one job made outside its fire times
    QUEUE_PAUSE = "queue.pause"
    QUEUE_RESUME = "queue.resume"
    FLEET_RESIZE = "fleet.resize"  # a host's desired process count set
    FLEET_CLEAR = "fleet.clear"  # a host's desired process count forgotten
    KEY_CREATE = "key.create"
    KEY_REVOKE = "key.revoke"


class Actor(StrEnum):
    """Who made a change: an API key (of a producer or an admin), or the command line (a
    person at the deployment's shell, `python -m app keys ...`)."""

    KEY = "key"
    CLI = "cli"


@dataclass(frozen=True, slots=True)
class AuditEvent:
    """One row of `audit_events`."""

    id: int
    at: datetime  # Postgres now() of the transaction that made the change
    actor: Actor
    key_id: uuid.UUID | None  # the API key, for actor "key"
    tenant: str | None  # the key's tenant, for actor "key"
    action: AuditAction
    target: dict[str, Any]  # job_ids, filter, operation_id, queue, host, key_id, ...
    request_id: str | None


@dataclass(frozen=True)
class AuditFilter:
    """Which events a reader asks for; every field narrows, None does not."""

    action: AuditAction | None = None
    tenant: str | None = None  # the acting key's tenant
    key_id: uuid.UUID | None = None
    since: datetime | None = None  # at or after
