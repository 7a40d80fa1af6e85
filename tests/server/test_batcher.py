"""server.batcher: grouping, waiting, errors, cancellation, a responsive event loop."""

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from server.batcher import MicroBatcher


def run(coro):
    return asyncio.run(coro)


def make(fn, max_batch=8, max_wait_s=0.01):
    sizes = []
    batcher = MicroBatcher(fn, ThreadPoolExecutor(1), max_batch, max_wait_s,
                           on_batch=lambda n, s: sizes.append(n))  # fmt: skip
    return batcher, sizes


def test_items_from_many_callers_share_a_run_and_get_their_own_rows():
    async def main():
        batcher, sizes = make(lambda x: x * 2, max_batch=8)
        batcher.start()
        items = [np.full(3, i, np.float32) for i in range(20)]
        out = await asyncio.gather(*(batcher.submit(x) for x in items))
        await batcher.stop()
        return items, out, sizes

    items, out, sizes = run(main())
    for x, y in zip(items, out, strict=True):
        assert np.array_equal(y, x * 2)
    assert sizes == [8, 8, 4]


def test_a_lone_item_waits_max_wait_by_the_batchers_clock():
    readings = []  # the batcher's clock, read off instead of timing it with a stopwatch

    def clock():
        readings.append(time.monotonic())
        return readings[-1]

    async def main():
        sizes = []
        batcher = MicroBatcher(lambda x: x, ThreadPoolExecutor(1), 8, 0.05,
                               on_batch=lambda n, s: sizes.append(n), clock=clock)  # fmt: skip
        batcher.start()
        await batcher.submit(np.zeros(2))
        await batcher.stop()
        return sizes

    assert run(main()) == [1]
    queued, *waits = readings  # submit's reading, then one per look at the deadline
    deadline = queued + 0.05
    # It ran at the first reading past the deadline: not before it, and no later look.
    assert waits[-1] >= deadline and all(t < deadline for t in waits[:-1])


def test_items_of_different_shapes_run_separately():
    shapes = []

    def fn(x):
        shapes.append(x.shape)
        return x.sum(axis=-1)

    async def main():
        batcher, _ = make(fn)
        batcher.start()
        out = await asyncio.gather(*(batcher.submit(np.ones((t, 2))) for t in (1, 2, 2, 1, 3)))
        await batcher.stop()
        return out

    out = run(main())
    assert [o.tolist() for o in out] == [[2], [2, 2], [2, 2], [2], [2, 2, 2]]
    assert sorted(shapes) == [(1, 3, 2), (2, 1, 2), (2, 2, 2)]


def test_errors_reach_every_caller_of_the_batch_and_the_batcher_goes_on():
    calls = []

    def fn(x):
        calls.append(len(x))
        if len(calls) == 1:
            raise RuntimeError("model failed")
        return x

    async def main():
        batcher, _ = make(fn)
        batcher.start()
        first = await asyncio.gather(*(batcher.submit(np.zeros(1)) for _ in range(3)),
                                     return_exceptions=True)  # fmt: skip
        second = await batcher.submit(np.ones(1))
        await batcher.stop()
        return first, second

    first, second = run(main())
    assert all(isinstance(e, RuntimeError) for e in first)
    assert second.tolist() == [1.0]


def test_cancelled_items_are_not_computed():
    seen = []

    async def main():
        batcher, _ = make(lambda x: seen.append(len(x)) or x, max_wait_s=0.05)
        batcher.start()
        gone = batcher.submit(np.zeros(1))
        kept = batcher.submit(np.zeros(1))
        gone.cancel()
        await kept
        await batcher.stop()

    run(main())
    assert seen == [1]


def test_the_event_loop_runs_while_the_model_does():
    started, release = threading.Event(), threading.Event()
    released = []

    def slow(x):
        started.set()
        # Only the event loop sets `release`: the wait ends True only if the loop ran while
        # the model did; a batcher that called the model on the loop would time out here.
        released.append(release.wait(5))
        return x

    async def main():
        batcher, _ = make(slow, max_wait_s=0.001)
        batcher.start()
        pending = batcher.submit(np.zeros(1))
        assert await asyncio.to_thread(started.wait, 5)  # the model is running
        release.set()
        await pending
        await batcher.stop()

    run(main())
    assert released == [True]


def test_submit_before_start_is_an_error():
    async def main():
        batcher, _ = make(lambda x: x)
        with pytest.raises(RuntimeError, match="not running"):
            batcher.submit(np.zeros(1))

    run(main())
