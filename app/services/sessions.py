"""Dashboard sign-in and sign-out: which key a session names is the dashboard's business
(app/ui/session.py); whether a session has signed out is kept in Redis, for as long as its
cookie could still be presented."""

from __future__ import annotations

from app.dispatch import sessions
from app.services.context import Context


def end_session(ctx: Context, session_id: str, seconds_left: int) -> None:
    """Sign a session out everywhere its cookie went, until the cookie would have expired."""
    sessions.end(ctx.redis.client, ctx.keys, session_id, seconds_left)


def session_ended(ctx: Context, session_id: str) -> bool:
    return sessions.ended(ctx.redis.client, ctx.keys, session_id)
