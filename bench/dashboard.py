"""The dashboard's queries at scale: a history of jobs seeded in bulk (a week of a busy system:
many tenants and queues, mostly completed, some failed with their errors, payloads of several
shapes), analysed as autovacuum would have, then each query the dashboard runs, timed several
times through the services the dashboard calls: the jobs list (first page, and pages deep in
filters), payload and error searches, a search by id or idempotency key, the dead-letter
queue's groups, and the overview."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from app.domain.cursor import encode_cursor
from app.domain.filters import JobQuery
from app.domain.principal import Principal, Scope
from app.domain.states import JobStatus
from app.services import dlq, overview, search
from app.services.context import Context
from app.services.maintenance import Stats
from bench import readout

SEED_CHUNK = 100_000
SPAN = timedelta(days=7)  # what RETENTION_SECONDS keeps by default
QUEUES = ["default", "emails", "webhooks", "reports", "billing", "exports", "images",
          "notifications", "search-index", "sync", "cleanup", "ml"]  # fmt: skip

# One statement per chunk: job n of `total` is created at a time proportional to n (ids and
# creation times rise together, as the API's time-ordered ids do). random() is seeded per
# chunk, so a history is the same every run. A few hundred tenants, the first few much busier
# than the rest; queues likewise; mostly completed, 4% failed with errors of seven kinds,
# cancelled and scheduled jobs, and the last ten minutes still in play.
_SEED = """
INSERT INTO jobs (id, tenant, queue, task, payload, priority, status, idempotency_key,
                  attempts, max_retries, timeout_seconds, run_at, result, last_error,
                  created_at, updated_at, started_at, finished_at)
SELECT (lpad(to_hex((extract(epoch FROM created_at) * 1000)::bigint), 12, '0') || '7'
          || substr(h, 1, 3) || '8' || substr(h, 4, 15))::uuid,
       tenant, queue, task, payload, priority, status,
       CASE WHEN r_key < 0.3 THEN 'order-' || n END,
       CASE status WHEN 'failed' THEN 4 WHEN 'queued' THEN 0 WHEN 'scheduled' THEN 0 ELSE 1 END,
       3, 300,
       CASE WHEN status = 'scheduled' THEN :now + interval '1 hour' ELSE created_at END,
       CASE WHEN status = 'completed' THEN '{"ok": true}'::jsonb END,
       CASE WHEN status = 'failed' THEN CASE floor(r_error * 7)::int
           WHEN 0 THEN 'TimeoutError: POST https://hooks.example.com/' || (n % 5000)
                       || ' did not answer within 30 s'
           WHEN 1 THEN 'ConnectionRefusedError: [Errno 111] Connection refused (smtp-'
                       || (n % 8) || '.internal:25)'
           WHEN 2 THEN 'KeyError: ''customer_id'' missing in order ' || n
           WHEN 3 THEN 'ValueError: invalid currency code '''
                       || (ARRAY['XXX', 'EURO', 'usd'])[1 + n % 3] || ''''
           WHEN 4 THEN 'http task: 503 Service Unavailable from api.partner-' || (n % 50)
                       || '.example.net'
           WHEN 5 THEN 'timeout: ran past 300 s'
           ELSE 'lost: heartbeat of host-' || (n % 12) || ':' || (1000 + n % 97) || '\\:1 gone'
       END END,
       created_at, created_at + interval '2 seconds',
       CASE WHEN status IN ('completed', 'failed', 'processing')
            THEN created_at + interval '1 second' END,
       CASE WHEN status IN ('completed', 'failed', 'cancelled')
            THEN created_at + interval '2 seconds' END
  FROM (
    SELECT n, h, r_key, r_error, created_at, tenant, queue, priority,
           queue || '.' || CASE WHEN r_task < 0.0005 THEN 'refund'
                                ELSE (ARRAY['run', 'send', 'sync'])
                                     [1 + floor(r_task * r_task * 3)::int]
                           END AS task,
           CASE WHEN created_at > :now - interval '10 minutes' THEN
                     (ARRAY['queued', 'queued', 'processing', 'completed', 'completed',
                            'failed'])[1 + floor(r_status * 6)::int]
                WHEN r_status < 0.939 THEN 'completed' WHEN r_status < 0.979 THEN 'failed'
                WHEN r_status < 0.997 THEN 'cancelled' ELSE 'scheduled' END AS status,
           CASE queue
             WHEN 'emails' THEN jsonb_build_object(
                 'to', 'user' || (n % 90000) || '@example.com',
                 'template', (ARRAY['welcome', 'reset', 'invoice', 'digest', 'receipt',
                                    'survey'])[1 + n % 6],
                 'locale', (ARRAY['en', 'fr', 'de'])[1 + n % 3])
             WHEN 'billing' THEN jsonb_build_object(
                 'order', n, 'amount', (n % 997) * 1.5,
                 'currency', (ARRAY['EUR', 'USD', 'GBP'])[1 + n % 3],
                 'customer', 'cus_' || (n % 40000))
             WHEN 'webhooks' THEN jsonb_build_object(
                 'url', 'https://hooks.example.com/' || (n % 5000),
                 'event', (ARRAY['order.created', 'order.paid', 'order.shipped',
                                 'user.deleted'])[1 + n % 4])
             ELSE jsonb_build_object(
                 'order', n, 'customer', 'cus_' || (n % 40000),
                 'items', jsonb_build_array(n % 13, n % 7),
                 'source', (ARRAY['web', 'app', 'api'])[1 + n % 3])
           END AS payload
      FROM (
        SELECT n, md5(n::text) AS h, random() AS r_key, random() AS r_error,
               random() AS r_task, random() AS r_status,
               :now - :span * (1 - n::float8 / :total) AS created_at,
               'tenant-' || lpad(floor(:tenants * random() ^ 3)::int::text, 3, '0') AS tenant,
               (CAST(:queues AS text[]))[1 + floor(12 * random() ^ 2)::int] AS queue,
               CASE WHEN random() < 0.9 THEN 0 WHEN random() < 0.7 THEN 5 ELSE 9 END
               AS priority
          FROM generate_series(:first, :last) AS n
      ) drawn
  ) shaped
"""


def seed(ctx: Context, total: int, now: datetime, tenants: int = 200) -> None:
    """`total` jobs created over the week before `now`, in chunks of SEED_CHUNK rows, one
    transaction each."""
    for first in range(1, total + 1, SEED_CHUNK):
        last = min(total, first + SEED_CHUNK - 1)
        with ctx.db.transaction() as session:
            session.execute(text("SELECT setseed(:seed)"), {"seed": first / (total + 1)})
            session.execute(
                text(_SEED),
                {"now": now, "span": SPAN, "total": total, "tenants": tenants,
                 "queues": QUEUES, "first": first, "last": last},
            )  # fmt: skip


def _position(session: Session, where: str, params: dict[str, Any], depth: int) -> str | None:
    """The cursor that continues after the `depth`-th match of a filter, newest first."""
    row = session.execute(
        text(
            f"SELECT created_at, id FROM jobs WHERE {where} "
            "ORDER BY created_at DESC, id DESC OFFSET :depth LIMIT 1"
        ),
        {**params, "depth": depth},
    ).first()
    return None if row is None else encode_cursor(row.created_at, row.id)


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))
    return ordered[index]


def _timed(call: Callable[[], object], repeats: int) -> tuple[float, float]:
    """p50 and p95 of `repeats` calls, in ms, after one unmeasured call."""
    call()
    took = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        took.append((time.perf_counter() - started) * 1000)
    return _percentile(took, 50), _percentile(took, 95)


def measure(ctx: Context, total: int, repeats: int = 20) -> dict[str, float]:
    """Seed `total` jobs, analyse them, count the last hour, then time each query."""
    now = datetime.now(UTC)
    started = time.perf_counter()
    seed(ctx, total, now)
    figures = {"seed_seconds": time.perf_counter() - started}
    readout.vacuum(ctx.settings.database_url)
    readout.checkpoint(ctx.settings.database_url)
    stats = Stats(ctx)
    started = time.perf_counter()
    stats.run_once(time.time())  # a first round: the whole last hour
    figures["stats_first_round_ms"] = (time.perf_counter() - started) * 1000
    figures["stats_round_p50_ms"], _ = _timed(lambda: stats.run_once(time.time()), 5)

    admin = Principal(uuid.uuid4(), "ops", frozenset({Scope.ADMIN}))
    busy = Principal(uuid.uuid4(), "tenant-000", frozenset({Scope.PRODUCER}))
    quiet = Principal(uuid.uuid4(), "tenant-150", frozenset({Scope.PRODUCER}))
    with ctx.db.transaction() as session:
        deep_failed = _position(session, "status = 'failed'", {}, total // 100)
        deep_tenant_queue = _position(
            session, "tenant = 'tenant-000' AND queue = 'emails'", {}, total // 100
        )
        # The order number of a billing job from the middle of the week: one match.
        order = session.scalar(
            text(
                "SELECT payload -> 'order' FROM jobs WHERE queue = 'billing' "
                "ORDER BY created_at OFFSET :half LIMIT 1"
            ),
            {"half": total // 50},
        )
        # An idempotency key of the busiest tenant from the middle of the week.
        key = session.scalar(
            text(
                "SELECT idempotency_key FROM jobs WHERE tenant = 'tenant-000' "
                "AND idempotency_key IS NOT NULL ORDER BY created_at OFFSET :half LIMIT 1"
            ),
            {"half": total // 50},
        )
    searches: dict[str, tuple[Principal, JobQuery, str | None]] = {
        "list_first_page_admin": (admin, JobQuery(None), None),
        "list_first_page_busy_tenant": (busy, JobQuery(None), None),
        "list_first_page_quiet_tenant": (quiet, JobQuery(None), None),
        "list_deep_page_failed": (admin, JobQuery(None, JobStatus.FAILED), deep_failed),
        "list_deep_page_tenant_queue": (busy, JobQuery(None, queue="emails"), deep_tenant_queue),
        "list_rare_task": (admin, JobQuery(None, task="billing.refund"), None),
        "payload_one_match": (admin, JobQuery(None, payload_contains={"order": order}), None),
        "payload_common_value": (
            admin, JobQuery(None, payload_contains={"template": "welcome"}), None
        ),
        "payload_tenant_common_value": (
            busy, JobQuery(None, payload_contains={"template": "welcome"}), None
        ),
        # Two filters that look independent and never hold together: no match anywhere.
        "payload_other_queue_no_match": (
            admin, JobQuery(None, queue="billing", payload_contains={"template": "welcome"}), None
        ),
        "error_rare": (admin, JobQuery(None, error_contains="partner-17."), None),
        "error_common": (admin, JobQuery(None, error_contains="refused"), None),
        "error_tenant_failed": (
            busy, JobQuery(None, JobStatus.FAILED, error_contains="timeout"), None
        ),
        "lookup_key_admin": (admin, JobQuery(None, id_or_key=key), None),
        "lookup_key_busy_tenant": (busy, JobQuery(None, id_or_key=key), None),
    }  # fmt: skip
    calls: dict[str, Callable[[], object]] = {
        name: partial(search.search, ctx, principal, query, 20, cursor)
        for name, (principal, query, cursor) in searches.items()
    }
    dead = JobQuery(None, JobStatus.FAILED)
    calls["dlq_groups_admin"] = partial(dlq.groups, ctx, admin, dead, 50)
    calls["dlq_groups_busy_tenant"] = partial(dlq.groups, ctx, busy, dead, 50)
    calls["overview_admin"] = partial(overview.overview, ctx, admin)
    calls["overview_busy_tenant"] = partial(overview.overview, ctx, busy)
    for name, call in calls.items():
        figures[f"{name}_p50_ms"], figures[f"{name}_p95_ms"] = _timed(call, repeats)
    return figures
