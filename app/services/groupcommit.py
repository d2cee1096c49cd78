"""Group commit: many callers' small writes share one transaction, with no added wait.

One flusher thread per process takes everything that arrived while its previous flush ran and
writes it in one go. A lone item is flushed at once, so it waits for no timer; under load the
groups grow by themselves, and Postgres sees one commit per group instead of one per item.
Each caller still gets its own answer only after the group's commit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import queue
import threading
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

Item = TypeVar("Item")
Result = TypeVar("Result")


@dataclass(frozen=True)
class _Waiter(Generic[Item, Result]):
    key: Hashable
    item: Item
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Result]


Settled = tuple[_Waiter[Item, Result], Result | BaseException]


class GroupCommit(Generic[Item, Result]):
    """`await run(key, item)` hands `item` to `flush(items) -> results` (one result per item,
    in order, all in one transaction), with only items of the same key, and returns its result.

    A flush that raises one of `isolate` (errors that one item's data can cause, raised before
    anything commits) is redone item by item, so a bad item fails alone. Any other error is
    every item's error: redoing a group whose commit may have happened could write it twice.
    """

    def __init__(
        self,
        name: str,
        flush: Callable[[Sequence[Item]], Sequence[Result]],
        max_items: int,
        isolate: tuple[type[Exception], ...] = (),
    ) -> None:
        self._name = name
        self._flush = flush
        self._max_items = max_items
        self._isolate = isolate
        self._queue: queue.SimpleQueue[_Waiter[Item, Result]] = queue.SimpleQueue()
        self._pid = 0
        self._lock = threading.Lock()

    async def run(self, key: Hashable, item: Item) -> Result:
        self._ensure_flusher()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Result] = loop.create_future()
        self._queue.put(_Waiter(key, item, loop, future))
        return await future

    def _ensure_flusher(self) -> None:
        # A thread does not survive a fork: a child starts its own on first use.
        if self._pid == os.getpid():
            return
        with self._lock:
            if self._pid != os.getpid():
                self._queue = queue.SimpleQueue()
                name = f"{self._name}-flusher"
                threading.Thread(target=self._flusher, name=name, daemon=True).start()
                self._pid = os.getpid()

    def _flusher(self) -> None:
        waiters = self._queue
        while True:
            group = [waiters.get()]
            while len(group) < self._max_items:
                try:
                    group.append(waiters.get_nowait())
                except queue.Empty:
                    break
            by_key: dict[Hashable, list[_Waiter[Item, Result]]] = {}
            for waiter in group:
                by_key.setdefault(waiter.key, []).append(waiter)
            by_loop: dict[asyncio.AbstractEventLoop, list[Settled[Item, Result]]] = {}
            for same_key in by_key.values():
                for waiter, outcome in zip(same_key, self._outcomes(same_key), strict=True):
                    by_loop.setdefault(waiter.loop, []).append((waiter, outcome))
            for loop, settled in by_loop.items():
                # One wake-up of each event loop per group, not one per item.
                with contextlib.suppress(RuntimeError):  # that loop has closed: nobody waits
                    loop.call_soon_threadsafe(_settle_all, settled)

    def _outcomes(self, group: list[_Waiter[Item, Result]]) -> list[Result | BaseException]:
        try:
            return self._checked(group, self._flush([waiter.item for waiter in group]))
        except Exception as exc:  # noqa: BLE001 - the caller gets whatever the flush raised
            if len(group) == 1 or not isinstance(exc, self._isolate):
                return [exc] * len(group)
            log.warning(
                "group write failed; writing its items one by one",
                extra={"action": "group_commit_split", "group": self._name, "size": len(group)},
            )
        outcomes: list[Result | BaseException] = []
        for waiter in group:
            try:
                outcomes.extend(self._checked([waiter], self._flush([waiter.item])))
            except Exception as exc:  # noqa: BLE001 - the caller gets whatever the flush raised
                outcomes.append(exc)
        return outcomes

    @staticmethod
    def _checked(
        group: list[_Waiter[Item, Result]], results: Sequence[Result]
    ) -> list[Result | BaseException]:
        if len(results) != len(group):
            raise RuntimeError(f"flush gave {len(results)} results for {len(group)} items")
        return list(results)


def _settle_all(settled: list[Settled[Item, Result]]) -> None:
    for waiter, outcome in settled:
        if waiter.future.done():  # the caller went away (client disconnect); the write stands
            continue
        if isinstance(outcome, BaseException):
            waiter.future.set_exception(outcome)
        else:
            waiter.future.set_result(outcome)
