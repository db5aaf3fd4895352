"""Prometheus metrics of the API, in their own registry (one per app, so tests can build many).

With several worker processes set ``PROMETHEUS_MULTIPROC_DIR``: every process writes its
samples there and ``/metrics`` aggregates them (gauges by their documented multiprocess mode).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client import multiprocess as prometheus_multiprocess

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
CONFIDENCE_BUCKETS = (0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0)


@dataclass(frozen=True)
class ServingMetrics:
    registry: CollectorRegistry
    requests: Counter
    latency: Histogram
    in_progress: Gauge
    predictions: Counter
    confidence: Histogram
    model_version: Gauge
    model_loaded: Gauge
    model_load_seconds: Gauge
    reloads: Counter
    log_queued: Counter
    log_replayed: Counter
    log_written: Counter
    log_spilled: Counter
    log_dropped: Counter
    log_queue_depth: Gauge
    log_store_up: Gauge
    scoring_process_up: Gauge

    def exposition(self) -> tuple[bytes, str]:
        if multiprocess_dir():
            registry = CollectorRegistry()
            prometheus_multiprocess.MultiProcessCollector(registry)
            return generate_latest(registry), CONTENT_TYPE_LATEST
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


def multiprocess_dir() -> str | None:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


def build_metrics() -> ServingMetrics:
    disable_created_metrics()  # *_created series double the output and nobody graphs them
    registry = CollectorRegistry()
    # Gauges that describe one process's state are summed or maxed across workers.
    return ServingMetrics(
        registry=registry,
        requests=Counter(
            "emotitrack_http_requests_total",
            "HTTP requests by route, method and status code.",
            ["route", "method", "status"],
            registry=registry,
        ),
        latency=Histogram(
            "emotitrack_http_request_duration_seconds",
            "HTTP request latency by route and status code.",
            ["route", "method", "status"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        ),
        in_progress=Gauge(
            "emotitrack_http_requests_in_progress",
            "Requests being handled, by route.",
            ["route", "method"],
            registry=registry,
            multiprocess_mode="livesum",
        ),
        predictions=Counter(
            "emotitrack_predictions_total",
            "Predictions made, by predicted label and model version.",
            ["label", "model_version"],
            registry=registry,
        ),
        confidence=Histogram(
            "emotitrack_prediction_confidence",
            "Confidence (probability of the predicted label) of predictions.",
            buckets=CONFIDENCE_BUCKETS,
            registry=registry,
        ),
        model_version=Gauge(
            "emotitrack_model_version",
            "Version of the model being served (0: none loaded).",
            ["model_name"],
            registry=registry,
            multiprocess_mode="max",
        ),
        model_loaded=Gauge(
            "emotitrack_model_loaded",
            "1 if a model is loaded and serving, 0 if /predict answers 503.",
            registry=registry,
            multiprocess_mode="min",
        ),
        model_load_seconds=Gauge(
            "emotitrack_model_load_seconds",
            "Time the served model took to load and warm up.",
            registry=registry,
            multiprocess_mode="max",
        ),
        reloads=Counter(
            "emotitrack_model_reloads_total",
            "Registry checks by outcome: loaded, unchanged, no_model, registry_unreachable, load_failed.",
            ["outcome"],
            registry=registry,
        ),
        log_queued=Counter(
            "emotitrack_prediction_log_queued_total",
            "Prediction records queued for the prediction log.",
            registry=registry,
        ),
        log_replayed=Counter(
            "emotitrack_prediction_log_replayed_total",
            "Spilled prediction records written to the store after it came back.",
            registry=registry,
        ),
        log_written=Counter(
            "emotitrack_prediction_log_written_total",
            "Prediction records written to the store.",
            registry=registry,
        ),
        log_spilled=Counter(
            "emotitrack_prediction_log_spilled_total",
            "Prediction records spilled to disk (store down or slow).",
            registry=registry,
        ),
        log_dropped=Counter(
            "emotitrack_prediction_log_dropped_total",
            "Prediction records lost (spill failed). Should stay 0.",
            registry=registry,
        ),
        log_queue_depth=Gauge(
            "emotitrack_prediction_log_queue_depth",
            "Prediction records waiting in memory.",
            registry=registry,
            multiprocess_mode="livesum",
        ),
        log_store_up=Gauge(
            "emotitrack_prediction_log_store_up",
            "1 if the prediction log store answered the last write.",
            registry=registry,
            multiprocess_mode="min",
        ),
        scoring_process_up=Gauge(
            "emotitrack_scoring_process_up",
            "1 if the model scores in its child process, 0 if in the API process (starting, "
            "restarting, or EMOTITRACK_SCORING_PROCESS=false).",
            registry=registry,
            multiprocess_mode="min",
        ),
    )
