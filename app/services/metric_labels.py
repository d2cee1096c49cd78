"""Bounded label values for the names tenants choose.

A metric labelled by queue or task gets one series per name, and any producer can invent
names. So a name becomes a label value only once admitted: the first METRICS_MAX_QUEUES queue
names and METRICS_MAX_TASKS task names seen by any process of the deployment are admitted (the
sets live in Redis, see app/dispatch/labels.py); every later name counts under OVERFLOW.

Each process remembers every answer it got, so a name costs one Redis round trip per process
in its life. When Redis cannot answer, unknown names count under OVERFLOW (and Redis is left
alone for a few seconds) rather than slow down or fail the job they belong to.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence

import redis

from app.dispatch import labels
from app.dispatch.client import RedisHandle
from app.dispatch.keys import Keys

log = logging.getLogger(__name__)

# Not a valid queue or task name (app/domain/schemas.py), so it never merges with a real one.
OVERFLOW = "(other)"
RETRY_AFTER_SECONDS = 5.0  # after Redis failed to answer, how long unknown names overflow unasked
# Refusals remembered per label at most; past this they are forgotten (and asked again), so a
# producer inventing names without end cannot grow a process's memory without end.
MAX_REFUSALS = 10_000


class _Admission:
    """The answers of one label's set, as this process learnt them."""

    def __init__(self, label: str, ask: Callable[[Sequence[str]], list[bool]]) -> None:
        self.label = label
        self._ask = ask
        self._admitted: set[str] = set()
        self._refused: set[str] = set()
        self._lock = threading.Lock()
        self._quiet_until = 0.0

    def value(self, name: str) -> str:
        """The label value for `name`: the name itself once admitted, else OVERFLOW."""
        if name in self._admitted:
            return name
        if name in self._refused:
            return OVERFLOW
        return self.values([name])[name]

    def values(self, names: Iterable[str]) -> dict[str, str]:
        """The label value of each name, with one round trip for all the unknown ones."""
        wanted = list(dict.fromkeys(names))
        unknown = [n for n in wanted if n not in self._admitted and n not in self._refused]
        if unknown:
            self._learn(unknown)
        return {name: name if name in self._admitted else OVERFLOW for name in wanted}

    def _learn(self, names: list[str]) -> None:
        if time.monotonic() < self._quiet_until:
            return
        try:
            answers = self._ask(names)
        except redis.RedisError as exc:
            self._quiet_until = time.monotonic() + RETRY_AFTER_SECONDS
            log.warning(
                "metric label admission unavailable; counting new names as overflow",
                extra={"action": "metric_labels_unavailable", "label": self.label,
                       "error": str(exc)},
            )  # fmt: skip
            return
        with self._lock:
            refused = [name for name, ok in zip(names, answers, strict=True) if not ok]
            self._admitted.update(name for name, ok in zip(names, answers, strict=True) if ok)
            if len(self._refused) + len(refused) > MAX_REFUSALS:
                self._refused.clear()
            self._refused.update(refused)
        if refused:
            log.info(
                "metric label values over the bound count as overflow",
                extra={"action": "metric_labels_overflow", "label": self.label,
                       "count": len(refused), "example": refused[0]},
            )  # fmt: skip


class MetricLabels:
    """The label values to count a job under: its queue and task names while admitted."""

    def __init__(self, handle: RedisHandle, keys: Keys, max_queues: int, max_tasks: int) -> None:
        def asker(label: str, bound: int) -> Callable[[Sequence[str]], list[bool]]:
            key = keys.metric_labels(label)
            return lambda names: labels.admit(handle.client, key, bound, names)

        self._queues = _Admission("queue", asker("queue", max_queues))
        self._tasks = _Admission("task", asker("task", max_tasks))

    def queue(self, name: str) -> str:
        return self._queues.value(name)

    def queues(self, names: Iterable[str]) -> dict[str, str]:
        """Each queue name's label value (one round trip at most)."""
        return self._queues.values(names)

    def job(self, queue: str, task: str) -> tuple[str, str]:
        """The (queue, task) label values of one job."""
        return self._queues.value(queue), self._tasks.value(task)

    def job_counts(self, counts: Mapping[tuple[str, str], int]) -> Counter[tuple[str, str]]:
        """Counts by (queue, task) names turned into counts by label values: names over the
        bound add up under OVERFLOW (one round trip per label at most)."""
        queues = self._queues.values(queue for queue, _ in counts)
        tasks = self._tasks.values(task for _, task in counts)
        bounded: Counter[tuple[str, str]] = Counter()
        for (queue, task), count in counts.items():
            bounded[queues[queue], tasks[task]] += count
        return bounded
