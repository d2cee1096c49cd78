"""Queue and task names are label values only up to a bound shared by every process; later
names count under one overflow value. And the API's metrics port serves without a key."""

from __future__ import annotations

import threading
from collections import defaultdict
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from app.dispatch import fleet as dispatch_fleet
from app.domain.schemas import JobCreate
from app.services import jobs
from app.services.context import Context
from app.services.gauges import FleetGauges
from app.services.metric_labels import OVERFLOW, MetricLabels
from app.settings import Settings
from tests.fleet_support import PRODUCER
from tests.helpers import LiveAPI, free_port


def label_values(text: str, label: str) -> dict[str, set[str]]:
    """Per metric family, the distinct values of `label` in an exposition."""
    found: dict[str, set[str]] = defaultdict(set)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if label in sample.labels:
                found[family.name].add(sample.labels[label])
    return found


def total(text: str, sample_name: str, **labels: str) -> float:
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == sample_name and labels.items() <= sample.labels.items()
    )


@pytest.mark.live
def test_five_hundred_queue_names_stay_within_the_bound_on_the_metrics_port(
    settings: Settings, ctx: Context, make_key: Any
) -> None:
    port = free_port()
    api = LiveAPI(settings, API_WORKERS="2", API_METRICS_PORT=str(port))
    try:
        headers = {"Authorization": f"Bearer {make_key('acme', 'producer')}"}
        # 500 jobs, each with a queue and a task name of its own, over ten connections so that
        # both API processes admit names.
        for chunk in range(10):
            batch = [
                {"task": f"t-{n}", "queue": f"q-{n}"} for n in range(chunk * 50, chunk * 50 + 50)
            ]
            with httpx.Client(base_url=api.url, headers=headers, timeout=30) as client:
                reply = client.post("/jobs/batch", json={"jobs": batch})
                assert reply.status_code == 200 and reply.json()["created"] == 50, reply.text

        # The API port wants a key by default; the metrics port does not.
        assert httpx.get(f"{api.url}/metrics", timeout=5).status_code == 401
        scraped = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10)
        assert scraped.status_code == 200
        text = scraped.text
    finally:
        api.stop()

    queues = label_values(text, "queue")
    tasks = label_values(text, "task")
    assert {"jobfleet_jobs_created", "jobfleet_queue_depth", "jobfleet_queue_paused"} <= set(queues)
    for family, values in queues.items():
        assert len(values) <= 100 + 1, (family, len(values))
    for family, values in tasks.items():
        assert len(values) <= 200 + 1, (family, len(values))
    assert (
        len(queues["jobfleet_jobs_created"]) == 101 and OVERFLOW in queues["jobfleet_jobs_created"]
    )
    assert len(queues["jobfleet_queue_depth"]) == 101
    # Nothing is lost: the overflow series carries the rest.
    assert total(text, "jobfleet_jobs_created_total") == 500
    assert total(text, "jobfleet_jobs_created_total", queue=OVERFLOW) == 400
    assert total(text, "jobfleet_queue_depth", state="queued") == 500
    assert ctx.redis.client.scard(ctx.keys.metric_labels("queue")) == 100
    assert ctx.redis.client.scard(ctx.keys.metric_labels("task")) == 200


def test_processes_admitting_at_once_never_pass_the_bound(ctx: Context) -> None:
    # Each MetricLabels stands for one process: its own cache, the shared set in Redis.
    processes = [MetricLabels(ctx.redis, ctx.keys, max_queues=100, max_tasks=10) for _ in range(8)]
    names = [f"queue-{n}" for n in range(300)]
    answers: list[dict[str, str]] = [{} for _ in processes]
    start = threading.Barrier(len(processes))

    def admit(index: int) -> None:
        start.wait()
        mine = names[index * 25 :] + names[: index * 25]  # each starts somewhere else
        for name in mine:
            answers[index][name] = processes[index].queue(name)

    threads = [threading.Thread(target=admit, args=(i,)) for i in range(len(processes))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    members = {m.decode() for m in ctx.redis.client.smembers(ctx.keys.metric_labels("queue"))}
    assert len(members) == 100
    for seen in answers:
        # Every process agrees with the shared set: admitted names are its members, the rest
        # overflow.
        assert {name for name, value in seen.items() if value != OVERFLOW} == members
        assert all(value in (name, OVERFLOW) for name, value in seen.items())


def test_names_count_as_overflow_while_redis_cannot_answer(settings: Settings) -> None:
    dead = Context(settings.model_copy(update={"redis_url": f"redis://127.0.0.1:{free_port()}/0"}))
    try:
        labels = dead.metric_labels
        assert labels.queue("mail") == OVERFLOW
        assert labels.job("mail", "send") == (OVERFLOW, OVERFLOW)
        counts = labels.job_counts({("mail", "send"): 2, ("sms", "send"): 3})
        assert counts == {(OVERFLOW, OVERFLOW): 5}
    finally:
        dead.close()


def test_queue_gauges_add_up_queues_past_the_bound(settings: Settings, ctx: Context) -> None:
    bounded = Context(settings.model_copy(update={"metrics_max_queues": 2}))
    try:
        # a and b are seen first and admitted; c and d share the overflow series.
        sizes = {"a": 1, "b": 2, "c": 3, "d": 4}
        requests = [JobCreate(task="noop", queue=q) for q, n in sizes.items() for _ in range(n)]
        jobs.submit_many(bounded, PRODUCER, requests)
        dispatch_fleet.pause(ctx.redis.client, ctx.keys, "c")

        def gauges() -> dict[str, dict[tuple[str, ...], float]]:
            return {
                family.name: {tuple(s.labels.values()): s.value for s in family.samples}
                for family in FleetGauges(bounded).collect()
            }

        seen = gauges()
        depth = seen["jobfleet_queue_depth"]
        assert {labels[0] for labels in depth} == {"a", "b", OVERFLOW}
        assert depth["a", "queued"] == 1 and depth["b", "queued"] == 2
        assert depth[OVERFLOW, "queued"] == 3 + 4
        # One of its queues still runs: the shared series is not paused, its age is d's.
        assert seen["jobfleet_queue_paused"][(OVERFLOW,)] == 0
        assert seen["jobfleet_queue_oldest_age_seconds"][(OVERFLOW,)] >= 0

        dispatch_fleet.pause(ctx.redis.client, ctx.keys, "d")
        assert gauges()["jobfleet_queue_paused"] == {("a",): 0, ("b",): 0, (OVERFLOW,): 1}
    finally:
        bounded.close()
