"""Prometheus metrics of the API, in their own registry (one per app, so tests can build many).

With several worker processes set ``PROMETHEUS_MULTIPROC_DIR`` (``serving.cli`` does when it is
unset): every process writes its samples there and ``/metrics`` aggregates them (gauges by their
documented multiprocess mode), and adds each live worker's ``process_*`` figures under its
``pid``. prometheus_client's multiprocess mode runs no collectors and cannot remove a series, so
both are done here: the process figures are read from ``/proc/<pid>`` of every live worker at
scrape time (``ProcessCollector``'s documented ``pid`` argument), and a model no longer served is
set to 0 in the files and left out of the answer.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Iterator
from contextlib import suppress
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Metric,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client import multiprocess as prometheus_multiprocess

from serving.settings import DEFAULT_ALERT_MIN_CONFIDENCE

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
CONFIDENCE_BUCKETS = (0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0)


# (model_name, version, run_id): the labels of emotitrack_model_info
ModelLabels = tuple[str, str, str]
MODEL_INFO = "emotitrack_model_info"
# prometheus_client's file names: <type>[_<gauge mode>]_<pid>.db
LIVE_GAUGE_FILE = re.compile(r"^gauge_live[a-z]+_(\d+)\.db$")


@dataclass(frozen=True)
class ServingMetrics:
    registry: CollectorRegistry
    requests: Counter
    latency: Histogram
    in_progress: Gauge
    predictions: Counter
    confidence: Histogram
    model_info: Gauge
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
    alert_min_confidence: Gauge
    shown_models: set[ModelLabels] = field(default_factory=set)

    def show_model(self, labels: ModelLabels | None) -> None:
        """One ``emotitrack_model_info`` series for the model being served, none for any other
        (and none at all while no model is loaded)."""
        for old in [shown for shown in self.shown_models if shown != labels]:
            if multiprocess_dir():
                # the files cannot forget a series: 0 marks it gone and the exposition drops it
                self.model_info.labels(*old).set(0)
            else:
                self.model_info.remove(*old)
            self.shown_models.discard(old)
        if labels is not None:
            self.model_info.labels(*labels).set(1)
            self.shown_models.add(labels)

    def exposition(self) -> tuple[bytes, str]:
        directory = multiprocess_dir()
        if directory:
            registry = CollectorRegistry()
            registry.register(WorkersCollector(directory))
            return generate_latest(registry), CONTENT_TYPE_LATEST
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class WorkersCollector:
    """Every worker's samples from ``directory``, and each live worker's process figures."""

    def __init__(self, directory: str) -> None:
        self.directory = directory

    def collect(self) -> Iterator[Metric]:
        workers = live_workers(self.directory)  # first: dead workers' gauges go before the merge
        files = [str(path) for path in Path(self.directory).glob("*.db")]
        for family in prometheus_multiprocess.MultiProcessCollector.merge(files):
            if family.name in (MODEL_INFO, SHADOW_MODEL_INFO):
                family.samples = [sample for sample in family.samples if sample.value != 0]
            yield family
        yield from process_families(workers)


def process_families(pids: Iterable[int]) -> list[Metric]:
    """The standard ``process_*`` metrics of each process, labelled by its ``pid``."""
    families: dict[str, Metric] = {}
    for pid in sorted(pids):
        for family in ProcessCollector(pid=partial(str, pid), registry=None).collect():
            merged = families.setdefault(
                family.name, Metric(family.name, family.documentation, family.type)
            )
            for sample in family.samples:
                merged.add_sample(sample.name, {**sample.labels, "pid": str(pid)}, sample.value)
    return list(families.values())


def live_workers(directory: str) -> set[int]:
    """The processes writing metrics into ``directory`` that are still running; the live-mode
    gauges of those that died are deleted (uvicorn has no hook to do it when a worker exits)."""
    pids = set()
    for path in Path(directory).iterdir():
        match = LIVE_GAUGE_FILE.match(path.name)
        if match:
            pids.add(int(match.group(1)))
    dead = {pid for pid in pids if not running(pid)}
    for pid in dead:
        # another worker's scrape may sweep the same files at the same moment
        with suppress(FileNotFoundError):
            prometheus_multiprocess.mark_process_dead(pid, directory)
    return pids - dead


def running(pid: int) -> bool:
    """Whether ``pid`` is a running process (a zombie is not: it has exited)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: it exists
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:  # no /proc: cannot tell a zombie apart
        return True
    return stat.rsplit(b")", 1)[-1].split()[0] not in (b"Z", b"X")


def multiprocess_dir() -> str | None:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


def clear_multiprocess_dir(directory: Path) -> None:
    """Delete prometheus_client's files of an earlier run: its documentation asks for the
    folder to be wiped before start-up, or old counts add to the new ones."""
    for path in directory.glob("*.db"):
        path.unlink(missing_ok=True)


def build_metrics(alert_min_confidence: float = DEFAULT_ALERT_MIN_CONFIDENCE) -> ServingMetrics:
    disable_created_metrics()  # *_created series double the output and nobody graphs them
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)  # one process: the standard figures, without a pid
    alert_threshold = Gauge(
        "emotitrack_alert_min_confidence_ratio",
        "Mean prediction confidence below which EmotiTrackLowConfidence fires "
        "(EMOTITRACK_ALERT_MIN_CONFIDENCE).",
        registry=registry,
        multiprocess_mode="livemax",
    )
    alert_threshold.set(alert_min_confidence)
    # Gauges of one process's state are summed, min'd or maxed over the live workers.
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
            "emotitrack_prediction_confidence_ratio",
            "Confidence (probability of the predicted label) of predictions.",
            buckets=CONFIDENCE_BUCKETS,
            registry=registry,
        ),
        model_info=Gauge(
            MODEL_INFO,
            "1 for the model being served, by registered name, version and run; no series "
            "while none is loaded.",
            ["model_name", "version", "run_id"],
            registry=registry,
            multiprocess_mode="livemax",
        ),
        model_loaded=Gauge(
            "emotitrack_model_loaded",
            "1 if a model is loaded and serving, 0 if /predict answers 503.",
            registry=registry,
            multiprocess_mode="livemin",
        ),
        model_load_seconds=Gauge(
            "emotitrack_model_load_seconds",
            "Time the served model took to load and warm up.",
            registry=registry,
            multiprocess_mode="livemax",
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
            multiprocess_mode="livemin",
        ),
        alert_min_confidence=alert_threshold,
        scoring_process_up=Gauge(
            "emotitrack_scoring_process_up",
            "1 if the model scores in its child process, 0 if in the API process (starting, "
            "restarting, or EMOTITRACK_SCORING_PROCESS=false).",
            registry=registry,
            multiprocess_mode="livemin",
        ),
    )


# -- shadow model (serving.shadow) ------------------------------------------------------------
SHADOW_MODEL_INFO = "emotitrack_shadow_model_info"


@dataclass(frozen=True)
class ShadowMetrics:
    predictions: Counter
    agreements: Counter
    dropped: Counter
    model_info: Gauge
    shown_models: set[ModelLabels] = field(default_factory=set)
    # the API's emotitrack_prediction_log_queued_total: shadow records go to the same log, and
    # its counters by fate (written, spilled, ...) count them too
    log_queued: Counter | None = None

    def show_model(self, labels: ModelLabels | None) -> None:
        """One ``emotitrack_shadow_model_info`` series for the shadow model loaded, none else."""
        for old in [shown for shown in self.shown_models if shown != labels]:
            if multiprocess_dir():
                self.model_info.labels(*old).set(0)  # the exposition drops zeros, as above
            else:
                self.model_info.remove(*old)
            self.shown_models.discard(old)
        if labels is not None:
            self.model_info.labels(*labels).set(1)
            self.shown_models.add(labels)


def build_shadow_metrics(
    registry: CollectorRegistry, log_queued: Counter | None = None
) -> ShadowMetrics:
    """The shadow model's metrics, in the API's registry (present, at 0, without a shadow)."""
    return ShadowMetrics(
        log_queued=log_queued,
        predictions=Counter(
            "emotitrack_shadow_predictions_total",
            "Predictions made by the shadow model off the request path, by its version.",
            ["model_version"],
            registry=registry,
        ),
        agreements=Counter(
            "emotitrack_shadow_agreements_total",
            "Shadow predictions with the same label as the answer they shadowed, by the "
            "shadow's version.",
            ["model_version"],
            registry=registry,
        ),
        dropped=Counter(
            "emotitrack_shadow_dropped_total",
            "Texts sampled for the shadow model but not scored (queue full, no shadow model "
            "loaded, or a shadow failure); the answers are never affected.",
            registry=registry,
        ),
        model_info=Gauge(
            SHADOW_MODEL_INFO,
            "1 for the shadow model loaded, by registered name, version and run.",
            ["model_name", "version", "run_id"],
            registry=registry,
            multiprocess_mode="livemax",
        ),
    )
