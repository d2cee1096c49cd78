"""The per-process cache of verified API keys."""

from __future__ import annotations

import threading
import time

from app.domain.principal import Principal

# A verified key is trusted for this long in the process that verified it: one Postgres
# round trip per key every few seconds instead of one per request. A revoked key stops
# working within this time (docs/DECISIONS.md).
KEY_CACHE_SECONDS = 5.0


class PrincipalCache:
    """Verified keys of this process, by digest, each with the time it stops being trusted."""

    def __init__(self) -> None:
        self._entries: dict[str, tuple[Principal, float]] = {}
        self._lock = threading.Lock()

    def get(self, digest: str) -> Principal | None:
        entry = self._entries.get(digest)
        if entry is None or entry[1] < time.monotonic():
            return None
        return entry[0]

    def put(self, digest: str, principal: Principal) -> None:
        with self._lock:
            if len(self._entries) > 10_000:  # unknown keys never land here; bound it anyway
                self._entries.clear()
            self._entries[digest] = (principal, time.monotonic() + KEY_CACHE_SECONDS)
