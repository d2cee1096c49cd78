"""Gauges computed at scrape time from Redis and Postgres: queue depth by state, the age of
the oldest waiting job, live workers by host and state, and the dead row versions of the tables
that churn. Served by the API only, so that several scrape targets never double them. Queues
beyond the label bound are added up under one overflow series."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterator

import redis
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from sqlalchemy.exc import DBAPIError

from app.dispatch import delayed, fleet
from app.services.context import Context
from app.store import jobs as job_store
from app.store import tables as table_store

log = logging.getLogger(__name__)


class FleetGauges:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    def describe(self) -> list[Metric]:
        # Registering a collector without describe() runs collect() once more to learn its
        # names; these queries should run once per scrape, not twice.
        return []

    def collect(self) -> Iterator[Metric]:
        try:
            yield from self._queues()
            yield from self._tables()
            yield from self._workers()
        except (redis.RedisError, DBAPIError) as exc:
            # A scrape during an outage gets the counters without these gauges.
            log.warning("scrape-time gauges unavailable", extra={"error": str(exc)})

    def _queues(self) -> Iterator[Metric]:
        client, keys = self.ctx.redis.client, self.ctx.keys
        with self.ctx.db.transaction() as session:
            gauges = job_store.cheap_counts(session)
            now = job_store.database_now(session)
        processing, failed, oldest = gauges.processing, gauges.failed, gauges.oldest_queued_at
        paused = fleet.paused_queues(client, keys)
        queues = sorted(set(processing) | set(failed) | set(oldest) | paused)
        ready = fleet.queue_lengths(client, keys, queues)
        scheduled = delayed.size(client, keys)
        # Queues past the label bound share one series (see app/services/metric_labels.py).
        groups: dict[str, list[str]] = {}
        for queue, value in self.ctx.metric_labels.queues(queues).items():
            groups.setdefault(value, []).append(queue)

        depth = GaugeMetricFamily(
            "jobfleet_queue_depth",
            "Jobs per queue and state: queued (ids ready in Redis), processing, failed (DLQ).",
            labels=["queue", "state"],
        )
        by_state = {"queued": ready, "processing": processing, "failed": failed}
        for value, members in groups.items():
            for state, counts in by_state.items():
                depth.add_metric([value, state], sum(counts.get(q, 0) for q in members))
        yield depth
        yield GaugeMetricFamily(
            "jobfleet_scheduled_jobs",
            "Jobs waiting for their run_at (delayed set).",
            value=scheduled,
        )
        age = GaugeMetricFamily(
            "jobfleet_queue_oldest_age_seconds",
            "Seconds the oldest runnable queued job of each queue has waited.",
            labels=["queue"],
        )
        paused_gauge = GaugeMetricFamily(
            "jobfleet_queue_paused", "1 when the queue is paused.", labels=["queue"]
        )
        for value, members in groups.items():
            # A shared series is paused only when all its queues are, and its age is that of
            # its running queues: a paused queue's jobs wait on purpose.
            running = [q for q in members if q not in paused]
            waited = [now - oldest[q] for q in running or members if q in oldest]
            age.add_metric([value], max(0.0, max(waited).total_seconds()) if waited else 0.0)
            paused_gauge.add_metric([value], 0.0 if running else 1.0)
        yield age
        yield paused_gauge

    def _tables(self) -> Iterator[Metric]:
        """Live and dead row versions of the tables that churn (a fixed list: the `table`
        label is bounded), when each was last vacuumed, and whether autovacuum may run."""
        with self.ctx.db.transaction() as session:
            health = table_store.table_health(session)
        live = GaugeMetricFamily(
            "jobfleet_table_live_tuples",
            "Live rows of the table (pg_stat_user_tables.n_live_tup, an estimate).",
            labels=["table"],
        )
        dead = GaugeMetricFamily(
            "jobfleet_table_dead_tuples",
            "Dead row versions VACUUM has not removed yet (pg_stat_user_tables.n_dead_tup).",
            labels=["table"],
        )
        vacuumed = GaugeMetricFamily(
            "jobfleet_table_last_vacuum_timestamp_seconds",
            "Unix time of the table's last vacuum, by autovacuum or by hand; 0 when it has not "
            "been vacuumed since the statistics were reset.",
            labels=["table"],
        )
        enabled = GaugeMetricFamily(
            "jobfleet_table_autovacuum_enabled",
            "1 when autovacuum may vacuum the table (on for the server and the table).",
            labels=["table"],
        )
        for table in health:
            live.add_metric([table.table], table.live_tuples)
            dead.add_metric([table.table], table.dead_tuples)
            at = table.last_vacuum.timestamp() if table.last_vacuum is not None else 0.0
            vacuumed.add_metric([table.table], at)
            enabled.add_metric([table.table], 1.0 if table.autovacuum else 0.0)
        yield from (live, dead, vacuumed, enabled)

    def _workers(self) -> Iterator[Metric]:
        beats = fleet.read_heartbeats(self.ctx.redis.client, self.ctx.keys)
        counts = Counter(
            (b.get("host", ""), b.get("state", "")) for b in beats if b.get("kind") == "worker"
        )
        workers = GaugeMetricFamily(
            "jobfleet_workers", "Live worker processes by host and state.", labels=["host", "state"]
        )
        for (host, state), count in sorted(counts.items()):
            workers.add_metric([host, state], count)
        yield workers
