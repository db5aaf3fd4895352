"""Shadow (champion/challenger) scoring: a second model scores a share of live requests off the
request path, and its predictions go to the prediction log for comparison.

The request path only samples and enqueues (``offer``): the answer is computed and its records
queued first, and a full queue drops the shadow work (counted) instead of waiting. A background
task takes the queued requests in small batches and scores them in the shadow model's own
scoring process (lowered in priority, so the primary's process and the event loop win the
cores); without one it scores in a thread in small batches. Shadow records carry
``source='shadow'``, the shadow's version and the id ``<primary request id>.shadow``
(``emotitrack.core.shadow_log``), so feedback for the primary joins to both.

The shadow URI is followed like the served model's (``serving.model_store.ModelStore``): an
alias such as ``models:/emotitrack-sentiment@challenger`` is re-resolved on every poll.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import time
from collections.abc import Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass, replace
from datetime import UTC, datetime

import numpy as np

from emotitrack.core.prediction_log import PredictionRecord
from emotitrack.core.shadow_log import SHADOW_SOURCE, shadow_request_id
from serving.metrics import ShadowMetrics
from serving.model_store import LoadedModel, ModelStore
from serving.prediction_log import PredictionLog
from serving.settings import ServingSettings

log = logging.getLogger("emotitrack.serving")

QUEUE_REQUESTS = 256  # requests waiting for the shadow; more are dropped
# texts waiting: one request may carry a thousand long texts, so requests alone do not bound
# the memory a lagging shadow holds
QUEUE_TEXTS = 4_096
BATCH_TEXTS = 32  # texts per shadow scoring call from the scoring process
IN_PROCESS_BATCH_TEXTS = 4  # per call in a thread: short GIL holds between event-loop turns
SHADOW_NICENESS = 10  # added to the shadow's scoring process's niceness


@dataclass(frozen=True)
class ShadowWork:
    """One sampled request: its texts and the records of the answer it got."""

    texts: list[str]
    records: list[PredictionRecord]


def sampled(share: float, draw: Callable[[], float] = random.random) -> bool:
    """Whether a request goes to the shadow: every one at 1, none at 0, else with ``share``."""
    if share >= 1:
        return True
    return share > 0 and draw() < share


def shadow_records(
    model: LoadedModel,
    work: ShadowWork,
    probabilities: np.ndarray,
    latency_ms: float,
    created_at: datetime,
) -> list[PredictionRecord]:
    """The shadow's predictions of ``work`` as records: the primary's (text, hash, descriptors,
    endpoint) with the shadow's answer, version and id."""
    classes = model.classes
    records = []
    for primary, row in zip(work.records, probabilities.tolist(), strict=True):
        best = max(range(len(classes)), key=row.__getitem__)
        records.append(
            replace(
                primary,
                request_id=shadow_request_id(primary.request_id),
                created_at=created_at,
                label=classes[best],
                confidence=row[best],
                probabilities=dict(zip(classes, row, strict=True)),
                model_name=model.name,
                model_version=model.version,
                latency_ms=latency_ms,
                source=SHADOW_SOURCE,
            )
        )
    return records


class ShadowScorer:
    """The shadow model, its queue and its worker; one per API process."""

    def __init__(
        self,
        settings: ServingSettings,
        prediction_log: PredictionLog,
        metrics: ShadowMetrics,
        *,
        queue_requests: int = QUEUE_REQUESTS,
        draw: Callable[[], float] = random.random,
    ) -> None:
        self.share = settings.shadow_share
        self.poll_interval_s = settings.poll_interval_s
        self.prediction_log = prediction_log
        self.metrics = metrics
        self.store = ModelStore(
            settings.shadow_model_uri,
            settings.tracking_uri,
            self._record_outcome,
            scoring_process=settings.scoring_process,
        )
        self.queue: asyncio.Queue[ShadowWork] = asyncio.Queue(maxsize=queue_requests)
        self._draw = draw
        self._queued_texts = 0
        self._tasks: list[asyncio.Task[None]] = []
        self._niced: set[int] = set()

    def _record_outcome(self, outcome: str, model: LoadedModel | None) -> None:
        self.metrics.show_model(
            None if model is None else (model.name, model.version, model.ref.run_id or "")
        )
        if outcome == "loaded" and model is not None:
            log.info("shadow model: %s version %s", model.name, model.version)

    def start(self) -> None:
        """Load the shadow model and follow its URI in the background: the API's readiness
        never waits for it."""
        self._tasks = [
            asyncio.create_task(self._follow(), name="shadow-model"),
            asyncio.create_task(self._work(), name="shadow-worker"),
        ]

    async def close(self) -> None:
        """Stop following and scoring (queued shadow work is dropped), close the model."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with suppress(asyncio.CancelledError):
                await task
        self.metrics.dropped.inc(sum(len(w.texts) for w in _drain(self.queue)))
        await self.store.close()

    # -- request path ------------------------------------------------------------------------
    def offer(self, texts: Sequence[str], records: Sequence[PredictionRecord]) -> bool:
        """Hand an answered request to the shadow if it is sampled; never blocks. False: not
        sampled, or dropped (queue full)."""
        if not sampled(self.share, self._draw):
            return False
        if self._queued_texts + len(texts) > QUEUE_TEXTS and not self.queue.empty():
            self.metrics.dropped.inc(len(texts))
            return False
        try:
            self.queue.put_nowait(ShadowWork(list(texts), list(records)))
        except asyncio.QueueFull:
            self.metrics.dropped.inc(len(texts))
            return False
        self._queued_texts += len(texts)
        return True

    # -- background --------------------------------------------------------------------------
    async def _follow(self) -> None:
        try:
            await self.store.refresh()
        except Exception:  # the poller below retries
            log.exception("shadow model: first load crashed")
        await self.store.poll_forever(self.poll_interval_s)

    async def _work(self) -> None:
        while True:
            batch = [await self.queue.get()]
            size = len(batch[0].texts)
            while size < BATCH_TEXTS and not self.queue.empty():
                batch.append(self.queue.get_nowait())
                size += len(batch[-1].texts)
            self._queued_texts -= size
            try:
                await self._score(batch)
            except asyncio.CancelledError:  # shutting down: this batch is dropped, and counted
                self.metrics.dropped.inc(size)
                raise
            except Exception:  # a shadow failure never reaches the answers: count, go on
                log.exception("shadow scoring failed; %d texts dropped", size)
                self.metrics.dropped.inc(size)

    async def _score(self, batch: list[ShadowWork]) -> None:
        model = self.store.current
        texts = [text for work in batch for text in work.texts]
        if model is None:
            self.metrics.dropped.inc(len(texts))
            return
        started = time.perf_counter()
        parts, first = [], 0
        while first < len(texts):
            # Checked per chunk: if the scoring process dies, the rest is scored here, in the
            # small chunks that keep the GIL short for the event loop.
            in_child = model.scoring is not None and model.scoring.in_child
            if in_child and model.scoring is not None:
                self._lower_priority(model.scoring.pid)
            size = BATCH_TEXTS if in_child else IN_PROCESS_BATCH_TEXTS
            parts.append(await asyncio.to_thread(model.score, texts[first : first + size]))
            first += size
        proba = np.concatenate(parts)
        latency_ms = (time.perf_counter() - started) * 1000
        now = datetime.now(UTC)
        offset, records = 0, []
        for work in batch:
            rows = proba[offset : offset + len(work.texts)]
            offset += len(work.texts)
            records.extend(shadow_records(model, work, rows, latency_ms, now))
        self.prediction_log.submit(records)
        if self.metrics.log_queued is not None:
            self.metrics.log_queued.inc(len(records))
        primary_labels = [r.label for work in batch for r in work.records]
        agreements = sum(s.label == p for s, p in zip(records, primary_labels, strict=True))
        self.metrics.predictions.labels(model_version=model.version).inc(len(records))
        # inc(0) too: a challenger that never agrees must show 0, not no data
        self.metrics.agreements.labels(model_version=model.version).inc(agreements)

    def _lower_priority(self, pid: int | None) -> None:
        """The shadow's scoring process yields the cores to the primary's and the API's."""
        if pid is None or pid in self._niced:
            return
        self._niced.add(pid)
        try:
            niceness = os.getpriority(os.PRIO_PROCESS, pid) + SHADOW_NICENESS
            os.setpriority(os.PRIO_PROCESS, pid, niceness)
        except OSError as exc:  # gone already, or not ours to change: it still works
            log.info("shadow scoring process %s keeps its priority: %s", pid, exc)


def _drain(queue: asyncio.Queue[ShadowWork]) -> list[ShadowWork]:
    items = []
    while not queue.empty():
        items.append(queue.get_nowait())
    return items
