"""An asyncio micro-batcher: items from every stream, one model run per batch.

`submit` queues one item (an array) and awaits its row of the result. A worker takes the oldest
item, gathers more until `max_batch` items or until the oldest has waited `max_wait_s`, stacks
items of equal shape (the sequence encoder sees windows shorter than T_w at a stream's start)
and runs the model once per shape in a thread executor, so the event loop keeps serving frames
while the model runs. Items already waiting when a run ends go into the next batch at once.

An item may name its own model function (`submit(item, fn)`): after a hot reload, streams still
on the old model and those on the new one share the batcher, and each run takes the items of
one function (so a retired model is freed once no stream submits to it).
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict, deque
from collections.abc import Callable
from concurrent.futures import Executor

import numpy as np

Model = Callable[[np.ndarray], np.ndarray]  # a batch in, its rows out


class MicroBatcher:
    def __init__(
        self,
        fn: Model | None,
        executor: Executor,
        max_batch: int,
        max_wait_s: float,
        on_batch: Callable[[int, float], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.fn = fn  # for items submitted without their own
        self.executor = executor
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self.on_batch = on_batch  # (batch size, seconds in the model)
        self.clock = clock  # injectable so tests read the waits off it, not off a stopwatch
        self._items: deque[tuple[float, np.ndarray, asyncio.Future, Model]] = deque()
        self._wakeup = asyncio.Event()
        self._worker: asyncio.Task | None = None

    def start(self) -> None:
        self._worker = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            await asyncio.gather(self._worker, return_exceptions=True)
        while self._items:
            future = self._items.popleft()[2]
            if not future.done():
                future.cancel()

    @property
    def pending(self) -> int:
        return len(self._items)

    def submit(self, item: np.ndarray, fn: Model | None = None) -> asyncio.Future:
        """Queue one item for `fn` (default: the batcher's); the future resolves to its output
        row."""
        if self._worker is None or self._worker.done():
            raise RuntimeError("batcher is not running")
        fn = fn or self.fn
        if fn is None:
            raise ValueError("no model function: give submit one")
        future = asyncio.get_running_loop().create_future()
        self._items.append((self.clock(), item, future, fn))
        self._wakeup.set()
        return future

    async def _wait(self, timeout: float | None) -> None:
        # An Event, not a Queue.get under a timeout: a wake-up lost to the timeout costs
        # nothing, the deque is checked again.
        self._wakeup.clear()
        try:
            async with asyncio.timeout(timeout):
                await self._wakeup.wait()
        except TimeoutError:
            pass

    async def _run(self) -> None:
        items = self._items
        while True:
            while not items:
                await self._wait(None)
            deadline = items[0][0] + self.max_wait_s
            while len(items) < self.max_batch and (left := deadline - self.clock()) > 0:
                await self._wait(left)
            batch = [items.popleft() for _ in range(min(self.max_batch, len(items)))]
            live = [(i, fut, fn) for _, i, fut, fn in batch if not fut.done()]  # cancelled: gone
            for fn, group in _groups(live):
                await self._run_group(fn, group)

    async def _run_group(self, fn: Model, group: list[tuple[np.ndarray, asyncio.Future]]) -> None:
        stacked = np.stack([item for item, _ in group])
        loop = asyncio.get_running_loop()
        start = time.perf_counter()
        try:
            out = await loop.run_in_executor(self.executor, fn, stacked)
        except Exception as e:
            for _, future in group:
                if not future.done():
                    future.set_exception(e)
            return
        if self.on_batch is not None:
            self.on_batch(len(group), time.perf_counter() - start)
        for (_, future), row in zip(group, out, strict=True):
            if not future.done():
                future.set_result(row)


def _groups(
    items: list[tuple[np.ndarray, asyncio.Future, Model]],
) -> list[tuple[Model, list[tuple[np.ndarray, asyncio.Future]]]]:
    """The items of each (function, shape), in order of their first item."""
    groups: dict[tuple[Model, tuple[int, ...]], list] = defaultdict(list)
    for item, future, fn in items:
        groups[fn, item.shape].append((item, future))
    return [(fn, group) for (fn, _), group in groups.items()]
