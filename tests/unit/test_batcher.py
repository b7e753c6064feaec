"""The adaptive batcher with a trivial ``process`` function, and the pure merge/split helpers.

The worker is held inside ``process`` (a threading.Event) whenever a test needs requests to queue up, so which
requests share a batch is decided by the code under test and never by timing. No assertion is on wall-clock time:
``asyncio.wait_for`` bounds only guard against a hang.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pytest

from shipml.batching.batcher import AdaptiveBatcher, BatchStats
from shipml.batching.merge import merge_columns, offsets
from shipml.errors import DeadlineExceeded, InferenceError, Overloaded

GUARD_S = 10.0  # upper bound on any wait in these tests; only reached when something hangs


@dataclass(frozen=True, eq=False)
class Item:
    name: str
    rows: int = 1
    fail: bool = False  # process returns an Exception for this slot


@dataclass(frozen=True)
class Done:
    item: Item


class Worker:
    """A ``process`` function that records each batch and can hold the first one until released."""

    def __init__(self, *, hold_first: bool = False, boom: str | None = None) -> None:
        self.calls: list[list[Item]] = []
        self.entered = threading.Event()
        self.release = threading.Event()
        self.boom = boom
        if not hold_first:
            self.release.set()

    def __call__(self, items: Sequence[Item]) -> list[Done | Exception]:
        self.calls.append(list(items))
        self.entered.set()
        if not self.release.wait(GUARD_S):
            raise TimeoutError("the test never released the worker")
        if self.boom is not None and any(i.name == self.boom for i in items):
            raise RuntimeError(f"the model blew up on a batch holding {self.boom}")
        return [ValueError(f"bad item {i.name}") if i.fail else Done(i) for i in items]

    def names(self) -> list[list[str]]:
        return [[i.name for i in call] for call in self.calls]

    async def wait_entered(self) -> None:
        assert await asyncio.to_thread(self.entered.wait, GUARD_S), "process was never called"


def make(worker: Worker, stats: list[BatchStats] | None = None, *, max_batch_size: int = 64,
         max_latency_ms: float = 2.0, max_queue: int = 2048) -> AdaptiveBatcher[Item, Done]:
    return AdaptiveBatcher(worker, name="test", max_batch_size=max_batch_size, max_latency_ms=max_latency_ms,
                           max_queue=max_queue, on_batch=None if stats is None else stats.append)


def later() -> float:
    return time.monotonic() + 3600


def submit(batcher: AdaptiveBatcher[Item, Done], item: Item, deadline: float | None = None) -> asyncio.Task[Done]:
    return asyncio.create_task(batcher.submit(item, item.rows, later() if deadline is None else deadline))


async def settle() -> None:
    """Let every ready task run its next step (no wall clock involved)."""
    for _ in range(10):
        await asyncio.sleep(0)


async def held(batcher: AdaptiveBatcher[Item, Done], worker: Worker) -> asyncio.Task[Done]:
    """Submit a first request and wait until the worker is busy with it: what is submitted next queues."""
    first = submit(batcher, Item("first"))
    await worker.wait_entered()
    return first


async def results(tasks: Sequence[asyncio.Task[Done]]) -> list[Done | BaseException]:
    return await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), GUARD_S)


# -- merging ----------------------------------------------------------------------------------------------------

def test_concurrent_requests_merge_into_batches_of_at_most_max_rows() -> None:
    async def go() -> None:
        worker = Worker(hold_first=True)
        stats: list[BatchStats] = []
        batcher = make(worker, stats, max_batch_size=4)
        first = await held(batcher, worker)
        items = [Item(f"r{i}") for i in range(10)]
        tasks = [submit(batcher, item) for item in items]
        await settle()
        assert batcher.depth == 10
        worker.release.set()
        got = await results([first, *tasks])
        await batcher.stop()

        assert worker.names() == [["first"], ["r0", "r1", "r2", "r3"], ["r4", "r5", "r6", "r7"], ["r8", "r9"]]
        for item, result in zip(items, got[1:], strict=True):
            assert isinstance(result, Done) and result.item is item  # each caller gets its own outcome
        assert [(s.rows, s.requests, s.dropped) for s in stats] == [(1, 1, 0), (4, 4, 0), (4, 4, 0), (2, 2, 0)]
        assert all(s.seconds >= 0 for s in stats)

    asyncio.run(go())


def test_rows_not_requests_count_and_a_big_request_runs_alone() -> None:
    async def go() -> None:
        worker = Worker(hold_first=True)
        stats: list[BatchStats] = []
        batcher = make(worker, stats, max_batch_size=4)
        first = await held(batcher, worker)
        items = [Item("a", 1), Item("big", 10), Item("b", 1), Item("c", 2), Item("d", 2)]
        tasks = [submit(batcher, item) for item in items]
        await settle()
        worker.release.set()
        got = await results([first, *tasks])
        await batcher.stop()

        # "big" does not join "a" (1 + 10 > 4) and takes nobody with it; c+d after b would be 5 > 4
        assert worker.names() == [["first"], ["a"], ["big"], ["b", "c"], ["d"]]
        assert [s.rows for s in stats] == [1, 1, 10, 3, 2]
        assert [r.item.name for r in got if isinstance(r, Done)] == ["first", "a", "big", "b", "c", "d"]

    asyncio.run(go())


def test_results_keep_order_and_identity_within_a_batch() -> None:
    async def go() -> None:
        worker = Worker(hold_first=True)
        batcher = make(worker)
        first = await held(batcher, worker)
        items = [Item(f"r{i}", rows=1 + i % 3) for i in range(7)]
        tasks = [submit(batcher, item) for item in items]
        await settle()
        worker.release.set()
        got = await results(tasks)
        await first
        await batcher.stop()

        assert worker.calls[1] == items  # one batch, in submission order, the very objects submitted
        assert [r.item if isinstance(r, Done) else r for r in got] == items

    asyncio.run(go())


# -- max_latency -------------------------------------------------------------------------------------------------

def test_a_lone_request_is_not_held_back_when_traffic_is_not_concurrent() -> None:
    async def go() -> None:
        worker = Worker()
        batcher = make(worker, max_latency_ms=600_000)  # held back, these requests would time out below
        for name in ("a", "b", "c"):
            done = await asyncio.wait_for(batcher.submit(Item(name), 1, later()), GUARD_S)
            assert done.item.name == name
        await batcher.stop()
        assert worker.names() == [["a"], ["b"], ["c"]]

    asyncio.run(go())


def test_a_request_waits_for_company_only_while_others_are_coming() -> None:
    async def go() -> None:
        worker = Worker(hold_first=True)
        batcher = make(worker, max_batch_size=2, max_latency_ms=600_000)
        first = await held(batcher, worker)
        pair = [submit(batcher, Item("x")), submit(batcher, Item("y"))]
        await settle()
        worker.release.set()
        await results([first, *pair])  # concurrent traffic, but nothing else is on its way: no wait
        alone = await asyncio.wait_for(batcher.submit(Item("alone"), 1, later()), GUARD_S)
        assert alone.item.name == "alone"

        batcher.coming += 1  # the server is reading another request's body
        c = submit(batcher, Item("c"))
        await settle()
        assert batcher.depth == 0 and not c.done()  # taken into the next batch, which waits for the other one
        batcher.coming -= 1
        d = submit(batcher, Item("d"))
        await results([c, d])  # the batch is full (2 rows): it goes at once, long before max_latency
        await batcher.stop()
        assert worker.names() == [["first"], ["x", "y"], ["alone"], ["c", "d"]]

    asyncio.run(go())


def test_the_wait_for_company_is_bounded_by_max_latency() -> None:
    async def go() -> None:
        worker = Worker()
        stats: list[BatchStats] = []
        batcher = make(worker, stats, max_batch_size=64, max_latency_ms=20)
        batcher.coming = 1  # announced, never submitted (its body was bad, say)
        started = time.monotonic()
        lone = await asyncio.wait_for(batcher.submit(Item("lone"), 1, later()), GUARD_S)
        waited = time.monotonic() - started
        assert lone.item.name == "lone"
        assert 0.015 <= waited < GUARD_S
        await batcher.stop()
        assert worker.names() == [["lone"]]
        assert [s.requests for s in stats] == [1]

    asyncio.run(go())


# -- requests that are not predicted -------------------------------------------------------------------------

def test_a_request_past_its_deadline_is_dropped_before_inference() -> None:
    async def go() -> None:
        worker = Worker(hold_first=True)
        stats: list[BatchStats] = []
        batcher = make(worker, stats)
        first = await held(batcher, worker)
        expires = time.monotonic() + 0.05
        late = submit(batcher, Item("late"), deadline=expires)  # fine when admitted, expires in the queue
        ok = submit(batcher, Item("ok"))
        await settle()
        for _ in range(200):  # hold the worker until the deadline has passed (bounded)
            if time.monotonic() > expires:
                break
            await asyncio.sleep(0.01)
        worker.release.set()
        got = await results([first, late, ok])
        await batcher.stop()

        assert isinstance(got[1], DeadlineExceeded) and got[1].status == 504
        assert isinstance(got[2], Done) and got[2].item.name == "ok"
        assert worker.names() == [["first"], ["ok"]]  # process never saw the expired request
        assert sum(s.dropped for s in stats) == 1
        assert sum(s.requests for s in stats) == 2

    asyncio.run(go())


def test_deadlines_answer_on_time_while_the_worker_is_still_busy() -> None:
    """A request in flight, or queued behind a slow batch, answers 504 at its deadline, not when the batch ends;
    the others of its batch still get their results."""
    async def go() -> None:
        worker = Worker(hold_first=True)
        batcher = make(worker)
        soon = time.monotonic() + 0.05
        in_flight = submit(batcher, Item("in-flight"), deadline=soon)
        await worker.wait_entered()
        patient = submit(batcher, Item("patient"))
        queued = submit(batcher, Item("queued"), deadline=soon)
        done, _ = await asyncio.wait([in_flight, queued], timeout=GUARD_S)  # the worker is still held
        assert len(done) == 2 and not worker.release.is_set()
        for task in (in_flight, queued):
            with pytest.raises(DeadlineExceeded, match="deadline"):
                task.result()
        worker.release.set()
        got = await results([patient])
        await batcher.stop()
        assert isinstance(got[0], Done) and got[0].item.name == "patient"
        assert worker.names() == [["in-flight"], ["patient"]]  # the queued one never reached process

    asyncio.run(go())


def test_a_nearer_deadline_than_the_timer_is_armed_for_still_answers_on_time() -> None:
    """Requests of one batcher need not share a timeout (a warm-up allows a minute, a model early in a fallback
    chain half the time left): a request whose deadline comes before the armed timer's re-arms it."""
    async def go() -> None:
        worker = Worker(hold_first=True)
        batcher = make(worker)
        first = submit(batcher, Item("first"), deadline=time.monotonic() + 3 * GUARD_S)  # arms a far timer
        await worker.wait_entered()
        soon = submit(batcher, Item("soon"), deadline=time.monotonic() + 0.05)
        done, _ = await asyncio.wait([soon], timeout=GUARD_S / 2)
        assert done, "the nearer deadline waited for the timer armed for the far one"
        with pytest.raises(DeadlineExceeded, match="deadline"):
            soon.result()
        worker.release.set()
        got = await results([first])
        await batcher.stop()
        assert isinstance(got[0], Done)

    asyncio.run(go())


def test_an_already_expired_request_on_an_idle_batcher_never_reaches_process() -> None:
    async def go() -> None:
        worker = Worker()
        stats: list[BatchStats] = []
        batcher = make(worker, stats)
        with pytest.raises(DeadlineExceeded, match="deadline"):
            await asyncio.wait_for(batcher.submit(Item("late"), 1, time.monotonic() - 1), GUARD_S)
        ok = await asyncio.wait_for(batcher.submit(Item("ok"), 1, later()), GUARD_S)
        await batcher.stop()
        assert ok.item.name == "ok"
        assert worker.names() == [["ok"]]
        assert sum(s.dropped for s in stats) == 1

    asyncio.run(go())


def test_a_request_whose_caller_gave_up_is_dropped_and_counted() -> None:
    async def go() -> None:
        worker = Worker(hold_first=True)
        stats: list[BatchStats] = []
        batcher = make(worker, stats)
        first = await held(batcher, worker)
        gone = submit(batcher, Item("gone"))
        ok = submit(batcher, Item("ok"))
        await settle()
        gone.cancel()  # e.g. the client disconnected, or the server's request timeout fired
        await settle()
        worker.release.set()
        got = await results([first, ok])
        await batcher.stop()

        assert gone.cancelled()
        assert isinstance(got[1], Done) and got[1].item.name == "ok"
        assert worker.names() == [["first"], ["ok"]]
        assert sum(s.dropped for s in stats) == 1

    asyncio.run(go())


def test_a_full_queue_refuses_at_once_while_admitted_requests_complete() -> None:
    async def go() -> None:
        worker = Worker(hold_first=True)
        batcher = make(worker, max_queue=2)
        first = await held(batcher, worker)
        admitted = [submit(batcher, Item("a")), submit(batcher, Item("b"))]
        await settle()
        assert batcher.depth == 2
        with pytest.raises(Overloaded, match="overloaded") as refused:
            await batcher.submit(Item("c"), 1, later())
        assert refused.value.status == 503 and refused.value.retry_after_s > 0
        worker.release.set()
        got = await results([first, *admitted])
        again = await asyncio.wait_for(batcher.submit(Item("d"), 1, later()), GUARD_S)  # room again
        await batcher.stop()

        assert [r.item.name for r in got if isinstance(r, Done)] == ["first", "a", "b"]
        assert again.item.name == "d"
        assert all(i.name != "c" for call in worker.calls for i in call)

    asyncio.run(go())


# -- failures -----------------------------------------------------------------------------------------------

def test_process_raising_fails_every_request_of_that_batch_and_the_next_batch_works() -> None:
    async def go() -> None:
        worker = Worker(hold_first=True, boom="boom")
        batcher = make(worker)
        first = await held(batcher, worker)
        tasks = [submit(batcher, Item("boom")), submit(batcher, Item("bystander"))]
        await settle()
        worker.release.set()
        got = await results([first, *tasks])
        after = await asyncio.wait_for(batcher.submit(Item("after"), 1, later()), GUARD_S)
        await batcher.stop()

        assert isinstance(got[0], Done)
        for failed in got[1:]:
            assert isinstance(failed, RuntimeError) and "blew up" in str(failed)
        assert after.item.name == "after"
        assert worker.names() == [["first"], ["boom", "bystander"], ["after"]]

    asyncio.run(go())


def test_an_exception_in_one_slot_fails_only_that_request() -> None:
    async def go() -> None:
        worker = Worker(hold_first=True)
        batcher = make(worker)
        first = await held(batcher, worker)
        tasks = [submit(batcher, Item("a")), submit(batcher, Item("bad", fail=True)), submit(batcher, Item("b"))]
        await settle()
        worker.release.set()
        got = await results([first, *tasks])
        await batcher.stop()

        assert worker.names() == [["first"], ["a", "bad", "b"]]
        assert isinstance(got[1], Done) and got[1].item.name == "a"
        assert isinstance(got[2], ValueError) and "bad item bad" in str(got[2])
        assert isinstance(got[3], Done) and got[3].item.name == "b"

    asyncio.run(go())


def test_process_returning_the_wrong_number_of_outcomes_fails_that_batch_only() -> None:
    async def go() -> None:
        calls: list[int] = []

        def short(items: Sequence[Item]) -> list[Done | Exception]:
            calls.append(len(items))
            return [] if len(calls) == 1 else [Done(i) for i in items]

        batcher: AdaptiveBatcher[Item, Done] = AdaptiveBatcher(short, name="short", max_batch_size=8)
        try:
            with pytest.raises(InferenceError):
                await asyncio.wait_for(batcher.submit(Item("a"), 1, later()), 1)
            after = await asyncio.wait_for(batcher.submit(Item("b"), 1, later()), 1)
            assert after.item.name == "b"
        finally:
            task = asyncio.create_task(batcher.stop())
            await asyncio.wait({task}, timeout=1)
            if task.done() and not task.cancelled():
                task.exception()  # the loop's own error, re-raised by stop(): seen, not lost

    asyncio.run(go())


# -- stop -----------------------------------------------------------------------------------------------------

def test_stop_finishes_what_is_queued() -> None:
    async def go() -> None:
        worker = Worker(hold_first=True)
        batcher = make(worker, max_batch_size=2)
        first = await held(batcher, worker)
        tasks = [submit(batcher, Item(f"q{i}")) for i in range(5)]
        await settle()
        stopping = asyncio.create_task(batcher.stop())
        await settle()
        assert not stopping.done()  # still draining
        worker.release.set()
        await asyncio.wait_for(stopping, GUARD_S)
        assert all(t.done() for t in [first, *tasks])
        got = [t.result() for t in [first, *tasks]]

        assert [r.item.name for r in got] == ["first", "q0", "q1", "q2", "q3", "q4"]
        assert worker.names() == [["first"], ["q0", "q1"], ["q2", "q3"], ["q4"]]

    asyncio.run(go())


def test_stop_answers_a_request_held_back_waiting_for_company() -> None:
    async def go() -> None:
        worker = Worker(hold_first=True)
        batcher = make(worker, max_latency_ms=5_000)
        first = await held(batcher, worker)
        pair = [submit(batcher, Item("x")), submit(batcher, Item("y"))]
        await settle()
        worker.release.set()
        await results([first, *pair])
        batcher.coming = 1  # another request is on its way: the next lone request waits for company

        waiting = submit(batcher, Item("waiting"))
        await settle()
        await asyncio.wait_for(batcher.stop(), GUARD_S)
        done = await asyncio.wait_for(waiting, 1)
        assert done.item.name == "waiting"

    asyncio.run(go())


# -- merge.py: pure helpers -----------------------------------------------------------------------------------

def test_offsets_are_each_part_start_and_stop() -> None:
    assert offsets([2, 0, 3, 1]) == [(0, 2), (2, 2), (2, 5), (5, 6)]
    assert offsets([]) == []


def test_merge_columns_concatenates_in_order_and_keeps_a_single_part_as_is() -> None:
    a = {"x": np.array([1.0, 2.0]), "s": np.array(["p", "q"], dtype=object)}
    b = {"x": np.array([3.0]), "s": np.array(["r"], dtype=object), "ignored": np.array([9])}
    merged = merge_columns([a, b], ["x", "s"])
    assert list(merged) == ["x", "s"]
    np.testing.assert_array_equal(merged["x"], [1.0, 2.0, 3.0])
    assert merged["x"].dtype == np.float64
    assert merged["s"].tolist() == ["p", "q", "r"]

    single = merge_columns([a], ["x", "s"])
    assert single == a and single is not a and single["x"] is a["x"]  # no copy of the arrays


def test_merge_columns_of_different_kinds_keeps_every_value_as_is() -> None:
    dense = {"x": np.array([0.5, 1.5])}
    raw = {"x": np.array(["oops", None], dtype=object)}
    merged = merge_columns([dense, raw], ["x"])
    assert merged["x"].dtype == object
    assert merged["x"].tolist() == [0.5, 1.5, "oops", None]
