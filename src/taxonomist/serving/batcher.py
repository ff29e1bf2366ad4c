"""Micro-batching: concurrent requests are pooled into one model call, in two stages.

The first waiting request opens a window (a few milliseconds, configurable); requests arriving meanwhile join
its batch until it holds ``max_items`` products. ``first(batch)`` runs on the event loop itself and answers what
it can at once -- the sparse tier everything, an ensemble's cascade the products its sparse member is sure of:
short numpy/scipy calls that hold the GIL, where a thread only adds GIL hand-over waits (fewer requests/s under
load). Those requests are answered there and then.
What it leaves goes to ``second`` in a worker thread (the encoders: torch, which releases the GIL), so the event
loop keeps accepting requests meanwhile; the next batch starts when the second stage is done. (Running first
stages on while the second stage works gives more products/s, but the first stages starve the encoder thread of
the GIL and the tail latency grows: benchmarks/RESULTS.md, "Serving the ensemble in two stages".) A batch whose
first stage would be long (``cost`` over ``inline_max_cost``: many long texts) runs it in a thread too, so that
one large request cannot stall health probes and every other request.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["MicroBatcher"]

logger = logging.getLogger(__name__)


@dataclass
class _Job:
    items: Sequence[Any]
    future: asyncio.Future[list[Any]]


Stage = tuple[list[Any], Any]
"""What ``first`` returns: each item's result (``None`` where the second stage answers it) and what it leaves to
the second stage (anything ``second`` understands; ``None`` when nothing is left)."""


class MicroBatcher:
    """``await batcher.submit(items)`` → this request's slice of ``first(pooled items)``, the ``None`` items
    answered by ``second(what first left)`` (the results of the ``None`` items, in order)."""

    def __init__(self, first: Callable[[list[Any]], Stage], second: Callable[[Any], list[Any]] | None = None,
                 window_s: float = 0.003, max_items: int = 64, on_batch: Callable[[int], None] | None = None,
                 cost: Callable[[list[Any]], int] | None = None, inline_max_cost: int = 20_000) -> None:
        self.first = first
        self.cost = cost  # what a batch costs the first stage (e.g. its characters of text)
        self.inline_max_cost = inline_max_cost  # above it the first stage runs in a thread, not on the loop
        self.second = second
        self.window_s = window_s
        self.max_items = max_items
        self.on_batch = on_batch
        self._queue: asyncio.Queue[_Job] | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._queue = asyncio.Queue()
        self._task = asyncio.create_task(self._run(), name="taxonomist-microbatcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None

    async def submit(self, items: Sequence[Any]) -> list[Any]:
        if self._queue is None:
            raise RuntimeError("the micro-batcher is not started")
        fut: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
        await self._queue.put(_Job(items, fut))
        return await fut

    async def _run(self) -> None:
        assert self._queue is not None
        loop = asyncio.get_running_loop()
        carry: _Job | None = None
        while True:
            first = carry or await self._queue.get()
            carry = None
            jobs, n = [first], len(first.items)
            deadline = loop.time() + self.window_s
            while n < self.max_items:
                timeout = deadline - loop.time()
                try:
                    job = self._queue.get_nowait() if timeout <= 0 else await asyncio.wait_for(self._queue.get(), timeout)
                except (asyncio.TimeoutError, asyncio.QueueEmpty):
                    break
                if n + len(job.items) > self.max_items:
                    carry = job  # starts the next batch
                    break
                jobs.append(job)
                n += len(job.items)
            items = [it for j in jobs for it in j.items]
            try:
                if self.cost is not None and self.cost(items) > self.inline_max_cost:
                    # a large batch (long texts) would hold the loop for its whole first stage: health probes and
                    # other requests would wait; in a thread the loop gets the GIL back between its bytecodes
                    results, left = await asyncio.to_thread(self.first, items)
                else:
                    results, left = self.first(items)
                if self.on_batch is not None:
                    self.on_batch(len(items))
                if left is not None:
                    if self.second is None:
                        raise RuntimeError("the first stage left items but this batcher has no second stage")
                    _answer(jobs, results, only_complete=True)
                    todo = iter(await asyncio.to_thread(self.second, left))
                    results = [next(todo) if r is None else r for r in results]
            except Exception as e:  # every waiting request gets the error
                for j in jobs:
                    if not j.future.done():
                        j.future.set_exception(e)
                continue
            _answer(jobs, results)


def _answer(jobs: list[_Job], results: list[Any], only_complete: bool = False) -> None:
    """Give each job its slice of ``results`` (the pooled items' results, in job order); with ``only_complete``,
    only the jobs whose items all have a result."""
    start = 0
    for j in jobs:
        part = results[start:start + len(j.items)]
        start += len(j.items)
        if not j.future.done() and not (only_complete and any(r is None for r in part)):
            j.future.set_result(part)
