"""The retry policy: pure functions of the attempt, the settings, the clock and randomness.

backoff(n) = min(cap, base ** n) seconds, with full jitter: a uniformly random delay between 0
and that bound, so jobs that failed together do not come back together.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


def backoff(attempt: int, base: float, cap: float, rand: Callable[[], float]) -> float:
    """Seconds to wait before the next attempt after failed attempt number `attempt` (1-based)."""
    ceiling = cap if attempt >= 64 else min(cap, base**attempt)
    return ceiling * rand()


@dataclass(frozen=True)
class Retry:
    delay_seconds: float


@dataclass(frozen=True)
class DeadLetter:
    pass


Decision = Retry | DeadLetter


def decide(
    attempts: int,
    max_retries: int,
    retryable: bool,
    base: float,
    cap: float,
    rand: Callable[[], float],
) -> Decision:
    """After a failed attempt: retry while attempts <= max_retries, else the dead-letter queue.

    `attempts` counts the attempts started so far, the failed one included, so a job with
    max_retries = 3 runs at most four times.
    """
    if retryable and attempts <= max_retries:
        return Retry(backoff(attempts, base, cap, rand))
    return DeadLetter()
