"""The job state machine: every status, what it means, and the one table of allowed moves.

Everything else is derived from `MOVES`: the sets the services act on (`CANCELLABLE`,
`RETRYABLE`), the statuses each guarded statement of app/store may read and write
(app/store/transitions.py), and the state diagram of docs/ARCHITECTURE.md, which
`python -m app.domain.states` prints. tests/test_states.py checks the SQL and the document
against this table.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class JobStatus(StrEnum):
    QUEUED = "queued"  # committed and ready; its id is (or will be) in a Redis list
    SCHEDULED = "scheduled"  # waiting for run_at: a delayed submit or a retry's backoff
    PROCESSING = "processing"  # claimed by a worker holding a lease token
    COMPLETED = "completed"  # finished successfully; result stored
    FAILED = "failed"  # out of retries, or not retryable: the dead-letter queue
    CANCELLED = "cancelled"  # stopped by a producer before it finished


class Step(StrEnum):
    """What moves a job: each step is one kind of guarded statement in app/store."""

    SUBMIT = "submit"  # the insert of a new job
    PROMOTE = "promote"  # the promoter: due scheduled jobs become ready
    CLAIM = "claim"  # a worker takes a queued job and its lease
    FINISH = "finish"  # the fenced finish of an attempt: ack, nack, task end, recovery
    UNCLAIM = "unclaim"  # a stopping worker hands back a claimed job it never started
    CANCEL = "cancel"  # a producer cancels a waiting job
    REQUEUE = "requeue"  # retry, or replay from the dead-letter queue


@dataclass(frozen=True)
class Move:
    """One allowed move. `source` None: the job is new. `why` names what makes the move, as
    the state diagram shows it; `steps` the statements that may perform it."""

    source: JobStatus | None
    target: JobStatus
    why: str
    steps: frozenset[Step]


def _move(source: JobStatus | None, target: JobStatus, why: str, *steps: Step) -> Move:
    return Move(source, target, why, frozenset(steps))


_S = JobStatus
MOVES: tuple[Move, ...] = (
    _move(None, _S.QUEUED, "submit, run_at now or past", Step.SUBMIT),
    _move(None, _S.SCHEDULED, "submit with a future run_at or delay_seconds", Step.SUBMIT),
    _move(_S.SCHEDULED, _S.QUEUED, "promoter, when run_at has come", Step.PROMOTE),
    _move(_S.SCHEDULED, _S.CANCELLED, "cancel", Step.CANCEL),
    _move(_S.QUEUED, _S.PROCESSING, "claim by a native or HTTP worker", Step.CLAIM),
    _move(_S.QUEUED, _S.CANCELLED, "cancel", Step.CANCEL),
    _move(_S.PROCESSING, _S.COMPLETED, "task returned, fenced finish", Step.FINISH),
    _move(
        _S.PROCESSING,
        _S.SCHEDULED,
        "attempt failed, timed out or lost, retries left",
        Step.FINISH,
    ),
    _move(_S.PROCESSING, _S.FAILED, "no retries left, or not retryable", Step.FINISH),
    _move(
        _S.PROCESSING,
        _S.CANCELLED,
        "attempt ended or handed back after a cancel request",
        Step.FINISH,
        Step.UNCLAIM,
    ),
    _move(
        _S.PROCESSING,
        _S.QUEUED,
        "unclaim, claimed but not started when the worker stops",
        Step.UNCLAIM,
    ),
    _move(_S.FAILED, _S.QUEUED, "retry, or replay from the dead-letter queue", Step.REQUEUE),
    _move(_S.CANCELLED, _S.QUEUED, "retry", Step.REQUEUE),
)


def sources(step: Step) -> frozenset[JobStatus]:
    """The statuses `step` moves jobs out of (empty for a submit)."""
    return frozenset(m.source for m in MOVES if step in m.steps and m.source is not None)


def targets(step: Step) -> frozenset[JobStatus]:
    """The statuses `step` may leave a job in."""
    return frozenset(m.target for m in MOVES if step in m.steps)


TRANSITIONS: dict[JobStatus, frozenset[JobStatus]] = {
    status: frozenset(m.target for m in MOVES if m.source is status) for status in JobStatus
}


def can_transition(current: JobStatus, target: JobStatus) -> bool:
    return target in TRANSITIONS[current]


WAITING = frozenset({JobStatus.QUEUED, JobStatus.SCHEDULED})
ACTIVE = frozenset({JobStatus.QUEUED, JobStatus.SCHEDULED, JobStatus.PROCESSING})
TERMINAL = frozenset({JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED})
CANCELLABLE = sources(Step.CANCEL)
RETRYABLE = sources(Step.REQUEUE)
# A running job cannot be cancelled at once: its cancellation is a flag its worker reads,
# and its attempt then ends cancelled (Step.FINISH).
CANCEL_REQUESTABLE = sources(Step.FINISH)
# A job no worker holds: deleting a running one would pull the row from under its worker.
DELETABLE = frozenset(JobStatus) - sources(Step.FINISH)


def mermaid() -> str:
    """The state diagram of docs/ARCHITECTURE.md, one arrow per move of the table."""
    lines = ["```mermaid", "stateDiagram-v2"]
    for move in MOVES:
        source = "[*]" if move.source is None else move.source.value
        lines.append(f"    {source} --> {move.target.value}: {move.why}")
    lines.append("```")
    return "\n".join(lines)


class AttemptOutcome(StrEnum):
    COMPLETED = "completed"
    FAILED = "failed"
    TIMEOUT = "timeout"
    LOST = "lost"
    CANCELLED = "cancelled"


if __name__ == "__main__":
    print(mermaid())
