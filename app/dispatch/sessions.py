"""Dashboard sessions that signed out. A session lives in its signed cookie; a copy of that
cookie would open pages until it expires, so sign-out leaves a marker here for the session's
remaining lifetime, and every page checks it."""

from __future__ import annotations

import redis

from app.dispatch.keys import Keys


def end(client: redis.Redis, keys: Keys, session_id: str, seconds_left: int) -> None:
    client.set(keys.ended_session(session_id), 1, ex=max(1, seconds_left))


def ended(client: redis.Redis, keys: Keys, session_id: str) -> bool:
    return bool(client.exists(keys.ended_session(session_id)))
