"""The status changes of the store, each declared with the step of the state table it performs.

A statement that writes `jobs.status` is made by `guarded(change, sql)`: `change` is taken from
the table of app/domain/states.py by its step, and says which statuses the statement's guard
(`WHERE status ...`) may accept and which its `SET status = ...` may write. A status that
arrives as a bound parameter goes through `bind_target` or `bind_sources`, which refuse one the
step does not allow. tests/test_states.py reads every declared statement's SQL and checks it
against its change, and fails on any statement of app/store that writes a status undeclared.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import TextClause, text

from app.domain.states import CANCEL_REQUESTABLE, JobStatus, Step, sources, targets


@dataclass(frozen=True)
class StatusChange:
    """What one guarded statement may do to a job's status. `step` None: a statement guarded
    on the status that leaves it as it is (it sets a flag)."""

    step: Step | None
    sources: frozenset[JobStatus]  # what the guard accepts; empty for an insert
    targets: frozenset[JobStatus]  # what it may write; empty when the status stays

    def bind_target(self, status: JobStatus) -> str:
        """`status` as a statement parameter, if this step may write it."""
        if status not in self.targets:
            raise ValueError(f"{self.step} cannot leave a job {status}")
        return status.value

    def bind_sources(self, statuses: Iterable[JobStatus]) -> list[str]:
        """The statuses a guard should accept, as a parameter, if this step may move them."""
        chosen = frozenset(statuses)
        if not chosen or not chosen <= self.sources:
            raise ValueError(f"{self.step} cannot move a job out of {sorted(chosen)}")
        return sorted(s.value for s in chosen)


def change(step: Step) -> StatusChange:
    return StatusChange(step, sources(step), targets(step))


SUBMIT = change(Step.SUBMIT)
PROMOTE = change(Step.PROMOTE)
CLAIM = change(Step.CLAIM)
FINISH = change(Step.FINISH)
UNCLAIM = change(Step.UNCLAIM)
CANCEL = change(Step.CANCEL)
REQUEUE = change(Step.REQUEUE)
# A running job's cancellation is a flag: the status stays until its attempt ends.
REQUEST_CANCEL = StatusChange(None, CANCEL_REQUESTABLE, frozenset())

_declared: list[tuple[StatusChange, str]] = []


def guarded(change: StatusChange, sql: str) -> TextClause:
    """The statement `sql`, declared as performing `change`."""
    _declared.append((change, sql))
    return text(sql)


def declared() -> list[tuple[StatusChange, str]]:
    """Every statement declared so far (by the store modules imported), with its change."""
    return list(_declared)
