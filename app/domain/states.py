"""The job state machine: every status, what it means, and which moves are allowed.

Each move is also guarded in its SQL (`WHERE status = ...`), so two actors racing on one job
cannot both win; this table is the single description of the moves, shown in docs/ARCHITECTURE.md.
"""

from __future__ import annotations

from enum import StrEnum


class JobStatus(StrEnum):
    QUEUED = "queued"  # committed and ready; its id is (or will be) in a Redis list
    SCHEDULED = "scheduled"  # waiting for run_at: a delayed submit or a retry's backoff
    PROCESSING = "processing"  # claimed by a worker holding a lease token
    COMPLETED = "completed"  # finished successfully; result stored
    FAILED = "failed"  # out of retries, or not retryable: the dead-letter queue
    CANCELLED = "cancelled"  # stopped by a producer before it finished


WAITING = frozenset({JobStatus.QUEUED, JobStatus.SCHEDULED})
ACTIVE = frozenset({JobStatus.QUEUED, JobStatus.SCHEDULED, JobStatus.PROCESSING})
TERMINAL = frozenset({JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED})
CANCELLABLE = WAITING
RETRYABLE = frozenset({JobStatus.FAILED, JobStatus.CANCELLED})
DELETABLE = frozenset(JobStatus) - {JobStatus.PROCESSING}

TRANSITIONS: dict[JobStatus, frozenset[JobStatus]] = {
    JobStatus.QUEUED: frozenset({JobStatus.PROCESSING, JobStatus.CANCELLED}),
    JobStatus.SCHEDULED: frozenset({JobStatus.QUEUED, JobStatus.CANCELLED}),
    # -> queued: a worker that is stopping hands back a claimed job it never started.
    JobStatus.PROCESSING: frozenset(
        {
            JobStatus.QUEUED,
            JobStatus.COMPLETED,
            JobStatus.SCHEDULED,
            JobStatus.FAILED,
            JobStatus.CANCELLED,
        }
    ),
    JobStatus.COMPLETED: frozenset(),
    JobStatus.FAILED: frozenset({JobStatus.QUEUED}),
    JobStatus.CANCELLED: frozenset({JobStatus.QUEUED}),
}


def can_transition(current: JobStatus, target: JobStatus) -> bool:
    return target in TRANSITIONS[current]


class AttemptOutcome(StrEnum):
    COMPLETED = "completed"
    FAILED = "failed"
    TIMEOUT = "timeout"
    LOST = "lost"
    CANCELLED = "cancelled"
