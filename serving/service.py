"""The service behind the API: the served model, predictions (batched, explained, logged),
feedback and the serving metrics. No HTTP here: refusals are ``serving.errors``' domain errors.

Blocking work (scoring, explaining, hashing and describing texts, the log store) runs in threads
or the scoring process, never on the event loop."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections import Counter
from contextlib import suppress
from datetime import UTC, datetime
from typing import Any

from emotitrack.core.descriptors import TextDescriber
from emotitrack.core.prediction_log import PredictionRecord, new_request_id
from serving.batching import MicroBatcher
from serving.errors import (
    CannotExplain,
    FeedbackExists,
    InvalidTexts,
    NoModelLoaded,
    PredictionLogUnavailable,
    UnknownLabel,
    UnknownModel,
    UnknownPrediction,
)
from serving.metrics import ModelLabels, ServingMetrics, build_metrics, build_shadow_metrics
from serving.model_store import LoadedModel, ModelStore
from serving.prediction_log import PredictionLog
from serving.schemas import text_problem
from serving.settings import ServingSettings
from serving.shadow import ShadowScorer

log = logging.getLogger("emotitrack.serving")


class Service:
    """Everything a request needs, built by the app's lifespan; one per app."""

    def __init__(self, settings: ServingSettings) -> None:
        self.settings = settings
        self.metrics: ServingMetrics = build_metrics(settings.alert_min_confidence)
        self.store = ModelStore(
            settings.model_uri,
            settings.tracking_uri,
            self._record_outcome,
            scoring_process=settings.scoring_process,
        )
        self.in_flight = 0  # HTTP requests being handled (serving.middleware counts them)
        self.batcher = MicroBatcher(
            window_ms=settings.batch_window_ms,
            max_batch=settings.max_model_batch,
            in_flight=lambda: self.in_flight,
        )
        self.prediction_log = PredictionLog(
            settings.prediction_log_url,
            settings.spill_dir,
            flush_interval_s=settings.log_flush_interval_s,
            flush_rows=settings.log_flush_rows,
            buffer_rows=settings.log_buffer_rows,
        )
        self._synced = {"written": 0, "spilled": 0, "dropped": 0, "replayed": 0}
        # model version -> its describer, loading or loaded (only without stored texts)
        self._describers: dict[str, asyncio.Task[TextDescriber]] = {}
        self._poller: asyncio.Task[None] | None = None
        self.shadow_metrics = build_shadow_metrics(self.metrics.registry, self.metrics.log_queued)
        self.shadow: ShadowScorer | None = None  # a second model, off the request path
        if settings.shadow_model_uri:
            self.shadow = ShadowScorer(settings, self.prediction_log, self.shadow_metrics)

    async def start(self) -> None:
        """Open the prediction log, start batching, load the model and follow the registry."""
        await asyncio.to_thread(self.prediction_log.start)
        self.batcher.start()
        await self.store.refresh()
        self._poller = asyncio.create_task(
            self.store.poll_forever(self.settings.poll_interval_s), name="model-poller"
        )
        if self.shadow is not None:
            self.shadow.start()

    async def close(self) -> None:
        """Stop following the registry, finish the batches, close the model and the log."""
        if self._poller is not None:
            self._poller.cancel()
            with suppress(asyncio.CancelledError):
                await self._poller
        await self.batcher.stop()
        if self.shadow is not None:  # before the log closes: its last records go in
            await self.shadow.close()
        await self.store.close()
        await asyncio.to_thread(self.prediction_log.close)
        counters = self.prediction_log.counters
        log.info(
            "prediction log closed: %d written, %d spilled, %d dropped",
            counters.written,
            counters.spilled,
            counters.dropped,
        )

    def _record_outcome(self, outcome: str, model: LoadedModel | None) -> None:
        self.metrics.reloads.labels(outcome=outcome).inc()
        self.metrics.model_loaded.set(1 if model is not None else 0)
        self.metrics.show_model(model_labels(model))
        if model is not None:
            self.metrics.model_load_seconds.set(model.load_seconds)

    def model(self) -> LoadedModel:
        model = self.store.current
        if model is None:
            raise NoModelLoaded(
                f"no model loaded: {self.store.status.last_error or 'starting up'}; "
                "promote a version (emotitrack promote) and retry"
            )
        return model

    def served(self, name: str, version: str | None = None) -> LoadedModel:
        """The loaded model if it is ``name`` (at ``version``, when given): the Open Inference
        Protocol names the model in every path."""
        model = self.model()
        if name != model.name or (version is not None and version != model.version):
            asked = name if version is None else f"{name} version {version}"
            raise UnknownModel(
                f"model {asked!r} is not served; this server serves {model.name!r} version "
                f"{model.version}"
            )
        return model

    async def predict(
        self, texts: list[str], endpoint: str, *, explain: bool = False
    ) -> tuple[LoadedModel, list[dict[str, Any]]]:
        """One result per text, shaped as ``Prediction``; every one queued for the prediction log.

        The records are queued last, once the whole answer is computed: a request refused, failed
        or cancelled by its timeout before then leaves no logged prediction its client never got
        (only a timeout while the answer is being sent still can).

        Plain dicts, serialised once by orjson: validating our own output through pydantic again
        would cost a share of every prediction."""
        model = self.model()
        explainer = model.explain
        if explain and explainer is None:
            raise CannotExplain(
                f"model version {model.version} cannot explain its predictions (not an "
                'EmotiTrack pipeline); send "explain": false'
            )
        started = time.perf_counter()
        proba = await self.batcher.score(model.score, texts)
        latency_ms = (time.perf_counter() - started) * 1000
        explanations = await asyncio.to_thread(explainer, texts) if explain and explainer else None
        stored_texts: list[str | None] = (
            [None] * len(texts) if not self.settings.store_text else list(texts)
        )
        hashes, descriptors = await self._hashes_and_descriptors(model, texts)
        now = datetime.now(UTC)
        classes = model.classes
        best = proba.argmax(axis=1).tolist()
        confidences = []
        predictions, records = [], []
        for i, (text, text_sha256, described, row, index) in enumerate(
            zip(stored_texts, hashes, descriptors, proba.tolist(), best, strict=True)
        ):
            confidences.append(row[index])
            probabilities = dict(zip(classes, row, strict=True))
            request_id = new_request_id()
            predictions.append(
                {
                    "sentiment": classes[index],
                    "confidence": row[index],
                    "probabilities": probabilities,
                    "model_version": model.version,
                    "request_id": request_id,
                }
            )
            if explanations is not None:
                predictions[-1]["explanation"] = explanations[i]
            records.append(
                PredictionRecord(
                    request_id=request_id,
                    created_at=now,
                    text=text,
                    label=classes[index],
                    confidence=row[index],
                    probabilities=probabilities,
                    model_name=model.name,
                    model_version=model.version,
                    latency_ms=latency_ms,
                    endpoint=endpoint,
                    text_sha256=text_sha256,
                    descriptors=described,
                )
            )
        self.prediction_log.submit(records)
        if self.shadow is not None:  # after the answer is complete; never waits
            self.shadow.offer(texts, records)
        self._count(model, confidences, best)
        return model, predictions

    async def _hashes_and_descriptors(
        self, model: LoadedModel, texts: list[str]
    ) -> tuple[list[str | None], list[dict[str, float] | None]]:
        """What the log keeps instead of the texts when it may not keep them; None each
        otherwise. In a thread: long batches would otherwise stall the event loop, /health
        included."""
        if self.settings.store_text:
            return [None] * len(texts), [None] * len(texts)
        # shielded: a request that times out must not cancel the load others wait for
        describer = await asyncio.shield(self.describer(model))
        return await asyncio.to_thread(hash_and_describe, describer, texts)

    def describer(self, model: LoadedModel) -> asyncio.Task[TextDescriber]:
        """The descriptors' tokenizer and vocabulary of ``model``, built once per version in a
        thread."""
        task = self._describers.get(model.version)
        if task is None:
            task = asyncio.get_running_loop().create_task(asyncio.to_thread(model.text_describer))
            self._describers = {model.version: task}  # older versions' describers go
        return task

    def _count(self, model: LoadedModel, confidences: list[float], best: list[int]) -> None:
        # Plain Python: np.unique and per-call label lookups cost a share of every prediction.
        self.metrics.log_queued.inc(len(best))
        for index, count in Counter(best).items():
            self.metrics.predictions.labels(
                label=model.classes[index], model_version=model.version
            ).inc(count)
        for confidence in confidences:
            self.metrics.confidence.observe(confidence)

    def check_texts(self, texts: list[str]) -> None:
        """The rules the request models apply, for texts that came in another payload."""
        if not texts:
            raise InvalidTexts("no texts in the payload")
        limit = self.settings.max_text_chars
        for i, text in enumerate(texts):
            where = f"text {i}" if len(texts) > 1 else "text"
            problem = text_problem(text)
            if problem:
                raise InvalidTexts(f"{where} {problem}")
            if len(text) > limit:
                raise InvalidTexts(f"{where} has {len(text)} characters; the limit is {limit}")
        if len(texts) > self.settings.max_batch_texts:
            raise InvalidTexts(
                f"{len(texts)} texts; at most {self.settings.max_batch_texts} per request, "
                "split the batch"
            )

    async def add_feedback(self, request_id: str, label: str) -> None:
        """Store the true label of a logged prediction, once."""
        model = self.model()
        if label not in model.classes:
            raise UnknownLabel(f"unknown label {label!r}; use one of {model.classes}")
        try:
            known = await asyncio.to_thread(self.prediction_log.knows, request_id)
            stored = known and await asyncio.to_thread(
                self.prediction_log.add_feedback, request_id, label
            )
        except Exception as exc:  # the store is down: the client should retry later
            raise PredictionLogUnavailable("prediction log store unavailable; retry later") from exc
        if not known:
            raise UnknownPrediction(f"no prediction with request_id {request_id!r}")
        if not stored:
            raise FeedbackExists(f"feedback for {request_id!r} was already given")

    def sync_log_metrics(self) -> None:
        """Carry the prediction log's counters into Prometheus counters (as increments)."""
        counters = self.prediction_log.counters
        for name, metric in (
            ("written", self.metrics.log_written),
            ("spilled", self.metrics.log_spilled),
            ("dropped", self.metrics.log_dropped),
            ("replayed", self.metrics.log_replayed),
        ):
            value = getattr(counters, name)
            if value > self._synced[name]:
                metric.inc(value - self._synced[name])
                self._synced[name] = value
        self.metrics.log_queue_depth.set(self.prediction_log.queue_depth())
        self.metrics.log_store_up.set(1 if counters.store_up else 0)
        self.metrics.scoring_process_up.set(
            1 if scoring_place(self.store.current) == "process" else 0
        )


def model_labels(model: LoadedModel | None) -> ModelLabels | None:
    """``emotitrack_model_info``'s labels for ``model``: name, version, run id."""
    if model is None:
        return None
    return model.name, model.version, model.ref.run_id or ""


def scoring_place(model: LoadedModel | None) -> str | None:
    """Where ``model`` scores: its child process, in this process, or nowhere (no model)."""
    if model is None:
        return None
    return "process" if model.scoring is not None and model.scoring.in_child else "in-process"


def hash_and_describe(
    describer: TextDescriber, texts: list[str]
) -> tuple[list[str | None], list[dict[str, float] | None]]:
    """Each text's SHA-256 and descriptors."""
    hashes: list[str | None] = [hashlib.sha256(t.encode()).hexdigest() for t in texts]
    descriptors: list[dict[str, float] | None] = [describer.describe_one(t) for t in texts]
    return hashes, descriptors
