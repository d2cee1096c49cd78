"""Waiting on conditions, never on time: poll with a deadline."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class WaitTimeout(AssertionError):
    """A condition did not hold in time.

    An AssertionError, so that a test that waits in vain fails (rather than errors) with the
    condition's last value in the message.
    """


def wait_until(
    predicate: Callable[[], T],
    timeout: float = 10.0,
    interval: float = 0.02,
    what: str = "condition",
) -> T:
    """Poll `predicate` until it returns something truthy and return that; raise WaitTimeout
    after `timeout` seconds. An exception from `predicate` ends the wait at once."""
    deadline = time.monotonic() + timeout
    last = predicate()
    while not last:
        if time.monotonic() > deadline:
            raise WaitTimeout(f"{what} not met within {timeout} s (last value {last!r})")
        time.sleep(interval)
        last = predicate()
    return last
