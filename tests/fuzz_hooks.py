"""Schemathesis hooks for tests/test_fuzz.py (loaded through SCHEMATHESIS_HOOKS)."""

from __future__ import annotations

from typing import Any

import schemathesis

LEASE = "/queues/{queue}/lease"
MAX_WAIT = 0.05  # seconds: an empty queue would otherwise hold each lease call up to 30 s


@schemathesis.hook
def before_call(context: Any, case: Any, kwargs: dict[str, Any]) -> None:
    """Shorten the lease long-poll: the API is fuzzed, not its patience. Only a valid wait is
    lowered, so what the case means (valid or not) is unchanged."""
    if case.operation.path != LEASE or not isinstance(case.body, dict):
        return
    wait = case.body.get("wait_seconds")
    if isinstance(wait, int | float) and not isinstance(wait, bool) and 0 <= wait <= 30:
        case.body["wait_seconds"] = min(wait, MAX_WAIT)
