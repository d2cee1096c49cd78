"""The ready lists in real Redis: per-tenant lists, their rings, bells, and the take scripts."""

from __future__ import annotations

import threading
import time

from app.dispatch import ready
from app.dispatch.keys import PRIORITIES
from app.dispatch.ready import Place
from app.services.context import Context


def ids(prefix: str, count: int) -> list[str]:
    return [f"{prefix}-{n}" for n in range(count)]


def ring(ctx: Context, queue: str, priority: int) -> list[str]:
    return [t.decode() for t in ctx.redis.client.lrange(ctx.keys.ring(queue, priority), 0, -1)]


def test_tenants_take_turns_within_a_priority_and_each_tenant_is_fifo(ctx: Context) -> None:
    client, keys = ctx.redis.client, ctx.keys
    ready.push(client, keys, Place("q", 0, "a"), ids("a", 3))
    ready.push(client, keys, Place("q", 0, "b"), ids("b", 2))
    assert ring(ctx, "q", 0) == ["a", "b"]
    order = []
    while (taken := ready.take_any(client, keys, ["q"], 1)) is not None:
        order += taken.job_ids
    assert order == ["a-0", "b-0", "a-1", "b-1", "a-2"]
    # An emptied list leaves its ring; nothing is left behind.
    assert ring(ctx, "q", 0) == []
    assert client.keys(f"{keys.prefix}:{{q}}:p0:*") == []


def test_higher_priority_first_across_queues_then_queue_order(ctx: Context) -> None:
    client, keys = ctx.redis.client, ctx.keys
    ready.push(client, keys, Place("low", 5, "a"), ["low-5"])
    ready.push(client, keys, Place("high", 5, "b"), ["high-5"])
    ready.push(client, keys, Place("low", 9, "a"), ["low-9"])
    taken = [ready.take_any(client, keys, ["high", "low"], 10) for _ in range(3)]
    assert [(t.place, t.job_ids) for t in taken if t] == [
        (Place("low", 9, "a"), ["low-9"]),
        (Place("high", 5, "b"), ["high-5"]),
        (Place("low", 5, "a"), ["low-5"]),
    ]


def test_take_any_takes_a_batch_from_one_list(ctx: Context) -> None:
    client, keys = ctx.redis.client, ctx.keys
    ready.push(client, keys, Place("q", 0, "a"), ids("a", 5))
    ready.push(client, keys, Place("q", 0, "b"), ids("b", 5))
    first = ready.take_any(client, keys, ["q"], 3)
    assert first is not None and first.job_ids == ["a-0", "a-1", "a-2"]
    second = ready.take_any(client, keys, ["q"], 10)
    assert second is not None and second.job_ids == ids("b", 5)
    assert ring(ctx, "q", 0) == ["a"]


def test_a_tenant_takes_only_its_own_ids(ctx: Context) -> None:
    client, keys = ctx.redis.client, ctx.keys
    ready.push(client, keys, Place("q", 0, "b"), ids("b", 2))
    assert ready.take_tenant(client, keys, "q", "a", 1) is None
    ready.push(client, keys, Place("q", 3, "a"), ["a-3"])
    ready.push(client, keys, Place("q", 7, "a"), ["a-7"])
    taken = ready.take_tenant(client, keys, "q", "a", 5)
    assert taken is not None and taken.place == Place("q", 7, "a") and taken.job_ids == ["a-7"]
    taken = ready.take_tenant(client, keys, "q", "a", 5)
    assert taken is not None and taken.place == Place("q", 3, "a")
    assert ready.take_tenant(client, keys, "q", "a", 5) is None
    # a's rings are empty again; b's ids are untouched.
    assert ring(ctx, "q", 7) == [] and ring(ctx, "q", 3) == [] and ring(ctx, "q", 0) == ["b"]
    assert ready.lengths(client, keys, ["q"]) == {"q": 2}


def test_hand_backs_go_to_the_head_in_their_order(ctx: Context) -> None:
    client, keys = ctx.redis.client, ctx.keys
    place = Place("q", 0, "a")
    ready.push(client, keys, place, ["later"])
    ready.push(client, keys, place, ["first", "second"], front=True)
    taken = ready.take_any(client, keys, ["q"], 10)
    assert taken is not None and taken.job_ids == ["first", "second", "later"]


def test_a_big_push_keeps_its_order_in_chunks(ctx: Context) -> None:
    client, keys = ctx.redis.client, ctx.keys
    place = Place("q", 0, "a")
    many = ids("x", 2500)
    ready.push(client, keys, place, many)
    ready.push(client, keys, place, ids("y", 2500), front=True)
    assert ready.head(client, keys, place, 3) == ["y-0", "y-1", "y-2"]
    assert ready.lengths(client, keys, ["q"]) == {"q": 5000}
    assert client.lrange(keys.ready("q", 0, "a"), -1, -1) == [b"x-2499"]


def test_lengths_count_every_priority_and_tenant(ctx: Context) -> None:
    client, keys = ctx.redis.client, ctx.keys
    for priority in PRIORITIES:
        ready.push(client, keys, Place("q", priority, "a"), ["a"])
        ready.push(client, keys, Place("q", priority, "b"), ["b1", "b2"])
    ready.push(client, keys, Place("other", 0, "a"), ["x"])
    assert ready.lengths(client, keys, ["q", "other", "empty"]) == {"q": 30, "other": 1, "empty": 0}


def test_a_push_wakes_a_waiter_and_an_empty_take_silences_old_bells(ctx: Context) -> None:
    client, keys = ctx.redis.client, ctx.keys
    woke: list[bool] = []
    waiting = threading.Thread(target=lambda: woke.append(ready.wait(client, keys, ["q"], 10)))
    waiting.start()
    began = time.monotonic()
    ready.push(client, keys, Place("q", 0, "a"), ["x"])
    waiting.join(10)
    assert woke == [True] and time.monotonic() - began < 5
    assert ready.take_any(client, keys, ["q"], 1) is not None
    # Tokens of ids that are gone would wake idle loops for nothing: an empty take clears them.
    ready.push(client, keys, Place("q", 0, "a"), ids("y", 5))
    assert client.llen(keys.bell("q")) == 5
    ready.take_any(client, keys, ["q"], 10)
    assert ready.take_any(client, keys, ["q"], 10) is None
    assert client.exists(keys.bell("q")) == 0
    assert ready.wait(client, keys, ["q"], 0.05) is False


def test_a_wake_ends_the_waits_of_that_worker_only(ctx: Context) -> None:
    client, keys = ctx.redis.client, ctx.keys
    woke: list[tuple[str, bool]] = []

    def wait(worker_id: str, timeout: float) -> None:
        woke.append((worker_id, ready.wait(client, keys, ["q"], timeout, worker_id)))

    waiters = [threading.Thread(target=wait, args=("w1", 10)) for _ in range(2)]
    waiters.append(threading.Thread(target=wait, args=("w2", 0.2)))
    for waiter in waiters:
        waiter.start()
    began = time.monotonic()
    # Whether the waits began before the wake or after, the tokens end them.
    ready.wake(client, keys, "w1", 2)
    for waiter in waiters:
        waiter.join(10)
    assert sorted(woke) == [("w1", True), ("w1", True), ("w2", False)]
    assert time.monotonic() - began < 5
    # Tokens no loop takes (it was busy, not waiting) expire.
    ready.wake(client, keys, "w3", 2)
    assert 0 < client.ttl(keys.wake("w3")) <= ready.WAKE_TTL


def test_a_ring_entry_without_ids_is_dropped_by_the_next_take(ctx: Context) -> None:
    client, keys = ctx.redis.client, ctx.keys
    # A blocking pop of a tenant's list may empty it before its ring is settled.
    client.rpush(keys.ring("q", 0), "ghost")
    ready.push(client, keys, Place("q", 0, "a"), ["a-0"])
    taken = ready.take_any(client, keys, ["q"], 1)
    assert taken is not None and taken.job_ids == ["a-0"]
    assert ring(ctx, "q", 0) == []


def test_legacy_lists_are_forgotten(ctx: Context) -> None:
    client, keys = ctx.redis.client, ctx.keys
    client.rpush(f"{keys.prefix}:{{q}}:p0", "old")
    ready.push(client, keys, Place("q", 0, "a"), ["new"])
    assert ready.forget_legacy_lists(client, keys) == 1
    assert client.exists(f"{keys.prefix}:{{q}}:p0") == 0
    assert ready.lengths(client, keys, ["q"]) == {"q": 1}
