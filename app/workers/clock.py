"""The job loop's sense of time, passed in so that a test can move it instead of sleeping."""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    def now(self) -> float:
        """Seconds on a scale that never goes back (not the time of day)."""
        ...

    def sleep(self, seconds: float) -> None: ...


class SystemClock:
    """The process's monotonic clock."""

    def now(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)
