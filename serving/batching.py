"""Adaptive micro-batching: concurrent requests share one model call.

A text scored alone costs far more per text than one in a large batch. Requests that arrive
while the model is busy queue up and are scored together in the next call, so under load
throughput rises and tail latency stays bounded, and an idle server adds no delay. A
``window_ms`` above 0 makes every request wait that long for company (the serving benchmark
found it only cost latency). Scoring lone requests inline on the event loop serialised
everything under load, since each handler then ran to completion before the next was read.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np

Score = Callable[[list[str]], np.ndarray]
Queued = tuple[Score, list[str], "asyncio.Future[np.ndarray]"]


class MicroBatcher:
    def __init__(
        self, *, window_ms: float, max_batch: int, in_flight: Callable[[], int] = lambda: 0
    ) -> None:
        self.window_s = window_ms / 1000
        self.max_batch = max_batch
        self._in_flight = in_flight  # requests the server is handling now, this one included
        self._queue: asyncio.Queue[Queued] = asyncio.Queue()
        self._held: Queued | None = None  # taken from the queue, left for the next call: no room
        # One model thread: scikit-learn releases the GIL little; more threads only contend.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="model")
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="micro-batcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self._executor.shutdown(wait=True)

    async def score(self, score: Score, texts: list[str]) -> np.ndarray:
        """Probabilities for ``texts`` with ``score`` (the model current when the request came)."""
        loop = asyncio.get_running_loop()
        if len(texts) >= self.max_batch:  # already a full batch: no sharing to gain
            # Whole, not in chunks: chunks of concurrent big requests would interleave on the
            # one model thread, and every one of them would finish as late as the last.
            return await loop.run_in_executor(self._executor, score, texts)
        future: asyncio.Future[np.ndarray] = loop.create_future()
        await self._queue.put((score, texts, future))
        return await future

    async def _next_batch(self) -> list[Queued]:
        """Queued requests for one model call: whole requests, at most ``max_batch`` texts in
        all (a request that does not fit waits for the next call)."""
        first = self._held or await self._queue.get()
        self._held = None
        batch = [first]
        size = len(first[1])
        if self.window_s:
            await asyncio.sleep(self.window_s)
        while size < self.max_batch and not self._queue.empty():
            item = self._queue.get_nowait()
            if size + len(item[1]) > self.max_batch:
                self._held = item
                break
            batch.append(item)
            size += len(item[1])
        return batch

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._next_batch()
            # Requests can straddle a model swap: group by the scorer each one asked for.
            groups: dict[int, list[Queued]] = {}
            for item in batch:
                groups.setdefault(id(item[0]), []).append(item)
            for items in groups.values():
                await self._score_group(loop, items)

    async def _score_group(
        self,
        loop: asyncio.AbstractEventLoop,
        items: list[Queued],
    ) -> None:
        texts = [t for _, request_texts, _ in items for t in request_texts]
        score = items[0][0]
        if len(texts) == 1 and self._queue.empty() and not self._held and self._in_flight() <= 1:
            # The only request in the server: the round trip to a scoring process costs it more
            # than the process saves; with others in flight the process wins.
            score = getattr(score, "in_process", score)
        try:
            proba = await loop.run_in_executor(self._executor, score, texts)
        except Exception as exc:
            for _, _, future in items:
                if not future.done():
                    future.set_exception(exc)
            return
        start = 0
        for _, request_texts, future in items:
            end = start + len(request_texts)
            if not future.done():  # the client may have gone away
                future.set_result(proba[start:end])
            start = end
