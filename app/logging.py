"""JSON logs, one event per line, with the context fields of the request or job at hand."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from pythonjsonlogger.orjson import OrjsonFormatter

CONTEXT_FIELDS = ("request_id", "tenant", "job_id", "worker_id", "queue", "task")

_EMPTY: dict[str, Any] = {}
# Never mutated: every change sets a new dict, so sharing one empty default is safe.
_context: ContextVar[dict[str, Any]] = ContextVar("jobfleet_log_context", default=_EMPTY)


@contextmanager
def log_context(**fields: Any) -> Iterator[None]:
    """Attach fields to every log line written inside the block (thread and task local)."""
    merged = {**_context.get(), **{k: v for k, v in fields.items() if v is not None}}
    token = _context.set(merged)
    try:
        yield
    finally:
        _context.reset(token)


def bind(**fields: Any) -> None:
    """Add fields to the current context for the rest of the request or task."""
    _context.set({**_context.get(), **{k: v for k, v in fields.items() if v is not None}})


def context_field(name: str) -> Any:
    """A field of the current context (`request_id` of the request at hand), or None."""
    return _context.get().get(name)


class _ContextFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in _context.get().items():
            if not hasattr(record, key):
                setattr(record, key, value)
        return True


def configure_logging(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        # orjson: the same lines at about half the CPU of the json module's encoder, which
        # counts at several lines per job (a request line, then created, claimed, completed).
        OrjsonFormatter(
            "{levelname}{name}{message}",
            style="{",
            timestamp="time",  # ISO 8601, UTC, microseconds
            rename_fields={"levelname": "level", "name": "logger"},
        )
    )
    handler.addFilter(_ContextFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("uvicorn.access", "alembic", "httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
