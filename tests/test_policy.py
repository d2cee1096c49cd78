"""The retry policy is pure: the clock and randomness are arguments."""

from __future__ import annotations

import random

import pytest

from app.domain.policy import DeadLetter, Retry, backoff, decide


@pytest.mark.parametrize("attempt", [1, 2, 3, 5, 8, 100])
def test_backoff_follows_the_formula_within_jitter_bounds(attempt: int) -> None:
    base, cap = 2.0, 60.0
    bound = min(cap, base**attempt)
    assert backoff(attempt, base, cap, lambda: 1.0) == pytest.approx(bound)
    assert backoff(attempt, base, cap, lambda: 0.0) == 0.0
    assert backoff(attempt, base, cap, lambda: 0.5) == pytest.approx(bound / 2)
    rng = random.Random(attempt)
    samples = [backoff(attempt, base, cap, rng.random) for _ in range(2000)]
    assert all(0 <= s <= bound for s in samples)
    # Full jitter spreads the delays over the whole range, not around one value.
    assert min(samples) < bound * 0.05 and max(samples) > bound * 0.95


def test_decide_retries_while_attempts_are_within_max_retries() -> None:
    half = lambda: 0.5  # noqa: E731
    assert decide(1, 3, True, 2.0, 60.0, half) == Retry(1.0)
    assert decide(3, 3, True, 2.0, 60.0, half) == Retry(4.0)
    assert decide(4, 3, True, 2.0, 60.0, half) == DeadLetter()
    assert decide(1, 0, True, 2.0, 60.0, half) == DeadLetter()
    assert decide(1, 3, False, 2.0, 60.0, half) == DeadLetter()
