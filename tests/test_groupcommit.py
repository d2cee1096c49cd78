"""Group commit: what arrives during a flush shares the next one; a bad item fails alone."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence

from app.services.groupcommit import GroupCommit


class Recorder:
    """A flush that records its groups, holds the first one until released, and fails on
    request: item -1 raises ValueError (isolated), item -2 RuntimeError (not isolated)."""

    def __init__(self) -> None:
        self.groups: list[list[int]] = []
        self.first_flush = threading.Event()
        self.release = threading.Event()

    def __call__(self, items: Sequence[int]) -> list[str]:
        self.groups.append(list(items))
        if len(self.groups) == 1:
            self.first_flush.set()
            assert self.release.wait(30)
        if -1 in items:
            raise ValueError("bad item")
        if -2 in items:
            raise RuntimeError("the database went away")
        return [f"done {item}" for item in items]


async def _hold_first_then_run(
    group: GroupCommit[int, str], recorder: Recorder, later: list[tuple[str, int]]
) -> list[str | BaseException]:
    """Run item 0, and while its flush is held, queue `later`; then release it."""
    first = asyncio.ensure_future(group.run("k", 0))
    assert await asyncio.to_thread(recorder.first_flush.wait, 30)
    tasks = [asyncio.ensure_future(group.run(key, item)) for key, item in later]
    # Scheduled after the tasks' first steps, which queue their items.
    asyncio.get_running_loop().call_soon(recorder.release.set)
    outcomes = await asyncio.gather(first, *tasks, return_exceptions=True)
    return list(outcomes)


def test_items_that_arrive_during_a_flush_share_the_next_one() -> None:
    recorder = Recorder()
    group: GroupCommit[int, str] = GroupCommit("test", recorder, max_items=100)
    outcomes = asyncio.run(_hold_first_then_run(group, recorder, [("k", n) for n in range(1, 11)]))
    assert outcomes == [f"done {n}" for n in range(11)]
    assert recorder.groups == [[0], list(range(1, 11))]


def test_a_group_is_never_larger_than_max_items() -> None:
    recorder = Recorder()
    group: GroupCommit[int, str] = GroupCommit("test", recorder, max_items=4)
    outcomes = asyncio.run(_hold_first_then_run(group, recorder, [("k", n) for n in range(1, 11)]))
    assert outcomes == [f"done {n}" for n in range(11)]
    assert recorder.groups == [[0], [1, 2, 3, 4], [5, 6, 7, 8], [9, 10]]


def test_items_of_different_keys_never_share_a_flush() -> None:
    recorder = Recorder()
    group: GroupCommit[int, str] = GroupCommit("test", recorder, max_items=100)
    later = [("a", 1), ("b", 2), ("a", 3), ("b", 4)]
    outcomes = asyncio.run(_hold_first_then_run(group, recorder, later))
    assert outcomes == [f"done {n}" for n in range(5)]
    assert recorder.groups == [[0], [1, 3], [2, 4]]


def test_an_isolated_error_is_redone_item_by_item_and_fails_only_its_item() -> None:
    recorder = Recorder()
    group: GroupCommit[int, str] = GroupCommit(
        "test", recorder, max_items=100, isolate=(ValueError,)
    )
    outcomes = asyncio.run(_hold_first_then_run(group, recorder, [("k", 1), ("k", -1), ("k", 2)]))
    assert outcomes[:2] == ["done 0", "done 1"]
    assert isinstance(outcomes[2], ValueError)
    assert outcomes[3] == "done 2"
    assert recorder.groups == [[0], [1, -1, 2], [1], [-1], [2]]


def test_any_other_error_fails_the_whole_group_and_is_never_redone() -> None:
    # The failed flush may have committed: redoing it could write its items twice.
    recorder = Recorder()
    group: GroupCommit[int, str] = GroupCommit(
        "test", recorder, max_items=100, isolate=(ValueError,)
    )
    outcomes = asyncio.run(_hold_first_then_run(group, recorder, [("k", 1), ("k", -2), ("k", 2)]))
    assert outcomes[0] == "done 0"
    assert all(isinstance(outcome, RuntimeError) for outcome in outcomes[1:])
    assert recorder.groups == [[0], [1, -2, 2]]


def test_a_flush_that_answers_the_wrong_number_of_items_fails_them_all() -> None:
    recorder = Recorder()
    group: GroupCommit[int, str] = GroupCommit(
        "test", lambda items: recorder(items)[:1], max_items=100
    )
    outcomes = asyncio.run(_hold_first_then_run(group, recorder, [("k", 1), ("k", 2)]))
    assert outcomes[0] == "done 0"
    assert all(isinstance(outcome, RuntimeError) for outcome in outcomes[1:])
