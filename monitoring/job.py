"""The monitoring job: reference vs. current window, Evidently report, outputs everywhere."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from mlflow import MlflowClient

from emotitrack.core import model_format
from emotitrack.core.descriptors import TextDescriber
from emotitrack.core.log_queries import WindowAggregates
from emotitrack.core.prediction_log import redacted_url
from emotitrack.core.progress import step
from emotitrack.core.reference import load_reference
from emotitrack.core.registry import ModelRef, ModelUnavailable, resolve
from monitoring import verdicts
from monitoring.descriptors import describe_window, with_descriptors
from monitoring.drift import (
    TEXT_DRIFT_SKIPPED,
    DriftSummary,
    column_drifts,
    drifted_share,
    run_quality_report,
    run_report,
)
from monitoring.estimation import measure_accuracy
from monitoring.index import QUALITY_FILE, REPORT_FILE, SUMMARY_FILE, write_index
from monitoring.settings import MonitoringSettings
from monitoring.shadow import shadow_summary
from monitoring.window import (
    WindowData,
    confidence_moments_shift,
    label_counts_shift,
    load_window,
)


class MonitoringError(RuntimeError):
    """The job cannot run and wrote nothing; the message names the problem."""


class DeliveryError(RuntimeError):
    """The report is written, but logging it to MLflow or pushing its figures failed; the
    message names what failed, ``summary`` holds the verdict (no ``mlflow_run_id``: not logged)."""

    def __init__(self, message: str, summary: DriftSummary) -> None:
        super().__init__(message)
        self.summary = summary


@dataclass(frozen=True)
class Window:
    since: datetime | None
    until: datetime
    last: int | None
    source: str | None = None
    batch_id: str | None = None

    def describe(self) -> dict[str, Any]:
        return {
            "start": self.since.isoformat() if self.since else None,
            "end": self.until.isoformat(),
            "last_records": self.last,
            "source": self.source,
            "batch_id": self.batch_id,
        }

    @property
    def live(self) -> bool:
        """The served traffic, which the alerts watch (not a batch checked before use)."""
        return self.batch_id is None and self.source in (None, "api")


def run_monitoring(
    settings: MonitoringSettings,
    *,
    last: int | None = None,
    all_versions: bool = False,
    source: str | None = None,
    batch_id: str | None = None,
) -> DriftSummary:
    """Build, write, log and export one drift report; return its summary. ``source`` and
    ``batch_id`` narrow the window to one kind of traffic or one scored batch."""
    mlflow.set_tracking_uri(settings.tracking_uri)
    now = datetime.now(UTC)
    # One batch is judged whole, whenever it was scored.
    by_hours = not last and batch_id is None
    window = Window(
        now - timedelta(hours=settings.window_hours) if by_hours else None,
        now,
        last,
        source,
        batch_id,
    )
    ref = _production(settings)
    with step(f"loading the reference sample of run {ref.run_id}"):
        reference = _reference(ref, settings)
    with step("reading the current window from the prediction log"):
        data = _current(settings, window, None if all_versions else ref.version)
    with step(f"loading {ref.load_uri} for its vocabulary"):
        describer = _describer(ref)
    reference = reference.rename(columns={"label": "true_label"})
    # The database drew a seeded sample for the report and summed every row for the rest
    # (docs/prediction-log.md): memory follows the sample, not the window.
    current = data.sample.rename(columns={"label": "predicted_label"})
    labelled = data.labelled.rename(columns={"label": "predicted_label"})
    report_reference = with_descriptors(_sample(reference, settings.max_report_rows), describer)
    report_current = describe_window(current, describer)
    # Without every text (EMOTITRACK_STORE_TEXT=false for some or all of the window) the text
    # domain classifier has nothing to compare; the descriptors were logged in its place.
    with_text = bool(report_current["text"].notna().all())
    with step(
        f"Evidently drift report: {len(report_reference)} reference vs "
        f"{len(report_current)} current rows{'' if with_text else ' (no texts: descriptors only)'}"
    ):
        snapshot = run_report(
            report_reference, report_current, settings.drift_share, with_text=with_text
        )
    summary = _summarise(snapshot, reference, current, data.aggregates, ref, window, settings)
    if window.live and window.last is None:  # a shadow scores live traffic; --last has no since
        with step("comparing the shadow model's answers with those given"):
            summary.shadow = _shadow(settings, window, None if all_versions else ref.version)
    if not with_text:
        summary.skipped_columns["text"] = TEXT_DRIFT_SKIPPED
    quality = None
    if summary.quality["current_accuracy"] is not None:
        with step(f"Evidently quality report on {summary.counts['feedback']} feedback labels"):
            classes = sorted(set(reference["true_label"]) | set(reference["predicted_label"]))
            quality = run_quality_report(reference, labelled, classes)
    try:
        out = _write_report(snapshot, quality, summary, settings.reports_dir, now)
    except OSError as exc:  # the staging folder is gone again: still nothing written
        raise MonitoringError(f"cannot write the report in {settings.reports_dir}: {exc}") from exc
    summary.report_html = str(out / REPORT_FILE)
    if quality is not None:
        summary.quality["report_html"] = str(out / QUALITY_FILE)
    # From here on the report exists: a failed destination is reported after the others ran.
    failures = []
    try:
        summary.mlflow_run_id = _log_to_mlflow(summary, out, settings)
    except (mlflow.exceptions.MlflowException, OSError) as exc:
        failures.append(f"logging to MLflow at {settings.tracking_uri} failed ({_first_line(exc)})")
    (out / SUMMARY_FILE).write_text(json.dumps(summary.to_dict(), indent=2, default=str))
    write_index(settings.reports_dir)
    # A batch's figures would overwrite (or clear) the live traffic's alerts: not pushed.
    if settings.pushgateway_url and window.live:
        try:
            push_to_prometheus(summary, settings.pushgateway_url)
        except OSError as exc:
            failures.append(f"Pushgateway {settings.pushgateway_url} unreachable ({exc})")
    if failures:
        raise DeliveryError(f"{'; '.join(failures)}; the report is in {out}", summary)
    return summary


def _first_line(exc: Exception) -> str:
    """The exception's type and first line: MLflow's messages can run to a stack of their own."""
    text = exc.message if isinstance(exc, mlflow.exceptions.MlflowException) else str(exc)
    lines = str(text).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0] if lines else ''}"


def _sample(frame: pd.DataFrame, rows: int) -> pd.DataFrame:
    return frame if len(frame) <= rows else frame.sample(n=rows, random_state=0)


def _production(settings: MonitoringSettings) -> ModelRef:
    try:
        ref = resolve(
            MlflowClient(settings.tracking_uri, settings.tracking_uri), settings.model_uri
        )
    except ModelUnavailable as exc:
        raise MonitoringError(str(exc)) from exc
    except mlflow.exceptions.MlflowException as exc:
        raise MonitoringError(
            f"registry at {settings.tracking_uri} unreachable: {exc.message}"
        ) from exc
    if not ref.run_id:
        raise MonitoringError(f"{settings.model_uri} has no training run, so no reference sample")
    return ref


def _reference(ref: ModelRef, settings: MonitoringSettings) -> pd.DataFrame:
    try:
        return load_reference(str(ref.run_id), settings.tracking_uri)
    except (OSError, mlflow.exceptions.MlflowException) as exc:
        raise MonitoringError(f"run {ref.run_id} has no reference sample: {exc}") from exc


def _current(settings: MonitoringSettings, window: Window, version: str | None) -> WindowData:
    try:
        data = load_window(
            settings.prediction_log_url,
            since=window.since,
            until=window.until,
            last=window.last,
            model_version=version,
            source=window.source,
            batch_id=window.batch_id,
            sample_rows=settings.max_report_rows,
        )
    except Exception as exc:  # any store failure means the same thing here
        problem = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise MonitoringError(
            f"prediction log {redacted_url(settings.prediction_log_url)} unreadable: "
            f"{type(exc).__name__}: {problem}"
        ) from exc
    scope = f"model version {version}" if version else "all versions"
    scope += f", source {window.source}" if window.source else ""
    scope += f", batch {window.batch_id}" if window.batch_id else ""
    rows = data.aggregates.rows
    if rows < settings.min_window_rows:
        raise MonitoringError(
            f"{rows} predictions in the window ({scope}); need at least {settings.min_window_rows} "
            "(widen --window-hours, use --last, or lower EMOTITRACK_MIN_WINDOW_ROWS)"
        )
    return data


def _shadow(settings: MonitoringSettings, window: Window, version: str | None) -> dict[str, Any]:
    try:
        return shadow_summary(
            settings.prediction_log_url,
            since=window.since,
            until=window.until,
            primary_version=version,
        )
    except Exception as exc:  # the log answered a moment ago: report it the same way
        raise MonitoringError(
            f"prediction log {redacted_url(settings.prediction_log_url)}: shadow comparison "
            f"failed: {_first_line(exc)}"
        ) from exc


def _describer(ref: ModelRef) -> TextDescriber:
    """Descriptors as the served model computes them: its tokenizer and vocabulary when it is in
    the model format, else (another model, a version from before the format) the default."""
    with tempfile.TemporaryDirectory() as tmp:
        try:
            scorer = model_format.read_logged(model_format.download(ref.load_uri, Path(tmp)))
        except (OSError, ValueError, mlflow.exceptions.MlflowException) as exc:
            raise MonitoringError(f"cannot load {ref.load_uri}: {_first_line(exc)}") from exc
    return TextDescriber.for_model(scorer)


def _summarise(
    snapshot: Any,
    reference: pd.DataFrame,
    sample: pd.DataFrame,
    aggregates: WindowAggregates,
    ref: ModelRef,
    window: Window,
    settings: MonitoringSettings,
) -> DriftSummary:
    """Counts, shares, prediction drift and measured accuracy from the database's sums over
    every row; the calibrated accuracy estimate from the uniform sample (calibration is a
    fitted curve the database cannot apply; the sample's mean is unbiased)."""
    columns = column_drifts(snapshot)
    drifted, share = drifted_share(snapshot)
    feedback = aggregates.feedback_rows
    reference_accuracy = float((reference["true_label"] == reference["predicted_label"]).mean())
    estimated = verdicts.window_estimate(reference, sample)
    measured = None
    if feedback >= settings.min_feedback:
        measured = measure_accuracy(aggregates.feedback_correct, feedback)
    quality: dict[str, Any] = {
        "feedback_rows": feedback,
        "min_feedback": settings.min_feedback,
        "reference_accuracy": reference_accuracy,
        "current_accuracy": None if measured is None else measured.accuracy,
        "estimated_accuracy": estimated.accuracy,
        "estimated_accuracy_interval": estimated.interval(),
        "measured_accuracy": None if measured is None else measured.accuracy,
        "measured_accuracy_interval": None if measured is None else measured.interval(),
    }
    judged = {
        "data_drift": verdicts.data_drift(columns, settings.data_drift_share),
        "prediction_drift": verdicts.shift_verdict(
            label_counts_shift(reference["predicted_label"], aggregates.label_counts),
            confidence_moments_shift(reference["confidence"], aggregates),
            p_value=settings.prediction_drift_p_value,
            min_label_change=settings.min_label_share_change,
            min_confidence_change=settings.min_confidence_change,
        ),
        "quality": verdicts.quality(
            reference_accuracy, estimated, measured, settings.accuracy_margin
        ),
    }
    return DriftSummary(
        generated_at=window.until.isoformat(),
        window=window.describe(),
        model={"name": ref.name, "version": ref.version, "run_id": ref.run_id, "uri": ref.uri},
        counts={
            "reference": len(reference),
            "current": aggregates.rows,
            "feedback": feedback,
            "report_sample": len(sample),
        },
        dataset_drift=share >= settings.drift_share,
        drift_share=share,
        drift_share_threshold=settings.drift_share,
        drifted_columns=drifted,
        columns=columns,
        predictions={
            "reference_label_shares": _shares(reference["predicted_label"]),
            "current_label_shares": {k: round(v, 4) for k, v in aggregates.label_shares.items()},
            "reference_mean_confidence": float(reference["confidence"].mean()),
            "current_mean_confidence": float(aggregates.mean_confidence or 0.0),
            "current_confidence_histogram": {
                "bins": aggregates.bins,
                "counts": aggregates.confidence_histogram,
            },
        },
        quality=quality,
        verdicts=judged,
    )


def _shares(labels: pd.Series) -> dict[str, float]:
    return {
        str(k): round(float(v), 4)
        for k, v in labels.value_counts(normalize=True).sort_index().items()
    }


def _write_report(
    snapshot: Any, quality: Any, summary: DriftSummary, reports_dir: Path, now: datetime
) -> Path:
    """Write into a temporary folder and rename it: a report is there whole or not at all."""
    reports_dir.mkdir(parents=True, exist_ok=True)
    final = reports_dir / now.strftime("%Y%m%dT%H%M%SZ")
    staging = Path(tempfile.mkdtemp(dir=reports_dir, prefix=".staging-"))
    try:
        snapshot.save_html(str(staging / REPORT_FILE))
        if quality is not None:
            quality.save_html(str(staging / QUALITY_FILE))
        (staging / SUMMARY_FILE).write_text(json.dumps(summary.to_dict(), indent=2, default=str))
        staging.rename(final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return final


def _log_to_mlflow(summary: DriftSummary, out: Path, settings: MonitoringSettings) -> str:
    # Under `mlflow run` the run (and its experiment) already exists: MLFLOW_RUN_ID names it.
    if "MLFLOW_RUN_ID" not in os.environ:
        mlflow.set_experiment(settings.monitoring_experiment)
    with mlflow.start_run(run_name=f"drift {summary.window['end']}") as run:
        mlflow.set_tags(
            {"model_name": summary.model["name"], "model_version": summary.model["version"]}
            | {f"skipped_{name}": why for name, why in summary.skipped_columns.items()}
        )
        mlflow.log_params(
            {
                "window_start": summary.window["start"],
                "window_end": summary.window["end"],
                "last_records": summary.window["last_records"],
                "source": summary.window.get("source"),
                "batch_id": summary.window.get("batch_id"),
            }
        )
        metrics = {
            "dataset_drift": float(summary.dataset_drift),
            "drift_share": summary.drift_share,
            "drifted_columns": float(summary.drifted_columns),
            "current_rows": float(summary.counts["current"]),
            "feedback_rows": float(summary.counts["feedback"]),
            "current_mean_confidence": summary.predictions["current_mean_confidence"],
        }
        metrics |= {f"drift_score_{name}": c.score for name, c in summary.columns.items()}
        metrics |= verdict_metrics(summary)
        metrics |= shadow_metrics(summary)
        mlflow.log_metrics(metrics)
        mlflow.log_artifact(str(out / REPORT_FILE), "drift")
        if (out / QUALITY_FILE).is_file():
            mlflow.log_artifact(str(out / QUALITY_FILE), "drift")
        mlflow.log_dict(summary.to_dict(), f"drift/{SUMMARY_FILE}")
        return run.info.run_id


def verdict_metrics(summary: DriftSummary) -> dict[str, float]:
    """The verdicts and accuracies as MLflow metrics, one per verdict (absent: not computed)."""
    quality = summary.quality
    names = {"data_drift": "data_drift", "prediction_drift": "prediction_drift"}
    metrics = {
        names.get(key, "quality_degraded"): float(verdict["detected"])
        for key, verdict in summary.verdicts.items()
    } | {
        "reference_accuracy": quality["reference_accuracy"],
        "estimated_accuracy": quality["estimated_accuracy"],
        "estimated_accuracy_lower": quality["estimated_accuracy_interval"][0],
        "estimated_accuracy_upper": quality["estimated_accuracy_interval"][1],
    }
    if quality["measured_accuracy"] is not None:
        metrics["measured_accuracy"] = quality["measured_accuracy"]
        metrics["current_accuracy"] = quality["measured_accuracy"]  # its name before schema 2
    prediction = summary.verdicts.get("prediction_drift", {})
    if "label_shares_p_value" in prediction:
        metrics["label_shares_p_value"] = prediction["label_shares_p_value"]
        metrics["confidence_p_value"] = prediction["confidence_p_value"]
    return metrics


def shadow_metrics(summary: DriftSummary) -> dict[str, float]:
    """Per shadow version: agreement with the served answers, and with feedback both
    accuracies on the same requests (the promotion gate's live evidence, docs/shadow.md)."""
    metrics = {}
    for pair in summary.shadow.get("pairs", []):
        suffix = f"_v{pair['shadow_version']}"
        for key, name in (
            ("agreement", "shadow_agreement"),
            ("shadow_accuracy", "shadow_accuracy"),
            ("primary_accuracy", "shadow_primary_accuracy"),
        ):
            if pair[key] is not None:
                metrics[name + suffix] = float(pair[key])
    return metrics


def push_to_prometheus(summary: DriftSummary, gateway: str) -> None:
    """The report's figures for Prometheus alerts (names in docs/monitoring.md). A batch job
    cannot be scraped, so it pushes; every series carries the model's name and version, and the
    push replaces the job's group, so a previous version's series go with it."""
    from prometheus_client import CollectorRegistry, Gauge, push_to_gateway

    registry = CollectorRegistry()
    model = {
        "model_name": str(summary.model["name"]),
        "model_version": str(summary.model["version"]),
    }

    def gauge(name: str, documentation: str, labels: tuple[str, ...] = ()) -> Gauge:
        return Gauge(name, documentation, [*model, *labels], registry=registry)

    flags = {
        "data_drift": ("emotitrack_data_drift_detected", "1 if the text and descriptors drifted."),
        "prediction_drift": (
            "emotitrack_prediction_drift_detected",
            "1 if the predicted-label shares or the mean confidence drifted.",
        ),
        "quality": (
            "emotitrack_quality_degraded",
            "1 if the estimated or measured accuracy fell below the reference minus the margin.",
        ),
    }
    for key, (name, documentation) in flags.items():
        gauge(name, documentation).labels(**model).set(
            float(summary.verdicts.get(key, {}).get("detected", False))
        )
    gauge("emotitrack_drift_share_ratio", "Share of monitored columns that drifted.").labels(
        **model
    ).set(summary.drift_share)
    p_value = gauge(
        "emotitrack_drift_column_p_value",
        "Drift test p-value per column (drift when below its threshold).",
        ("column", "method"),
    )
    distance = gauge(
        "emotitrack_drift_column_distance",
        "Drift distance or classifier score per column (drift when at or above its threshold).",
        ("column", "method"),
    )
    threshold = gauge(
        "emotitrack_drift_column_threshold",
        "The threshold of the column's drift test.",
        ("column", "method"),
    )
    drifted = gauge("emotitrack_drift_column_drifted", "1 if the column drifted.", ("column",))
    for name, column in summary.columns.items():
        scores = p_value if "p_value" in column.method else distance
        scores.labels(**model, column=name, method=column.method).set(column.score)
        threshold.labels(**model, column=name, method=column.method).set(column.threshold)
        drifted.labels(**model, column=name).set(float(column.drifted))
    quality = summary.quality
    gauge(
        "emotitrack_estimated_accuracy_ratio",
        "Accuracy estimated from the calibrated confidences (no labels needed).",
    ).labels(**model).set(quality["estimated_accuracy"])
    gauge(
        "emotitrack_estimated_accuracy_lower_ratio",
        "Lower end of the estimated accuracy's 95 % interval.",
    ).labels(**model).set(quality["estimated_accuracy_interval"][0])
    if quality["measured_accuracy"] is not None:
        gauge(
            "emotitrack_measured_accuracy_ratio", "Accuracy on the window's feedback labels."
        ).labels(**model).set(quality["measured_accuracy"])
    gauge(
        "emotitrack_reference_accuracy_ratio",
        "The model's accuracy on its reference (held-out) sample.",
    ).labels(**model).set(quality["reference_accuracy"])
    shares = gauge(
        "emotitrack_prediction_label_share_ratio",
        "Share of the window's predictions per label.",
        ("label",),
    )
    for label, share in summary.predictions["current_label_shares"].items():
        shares.labels(**model, label=label).set(share)
    gauge(
        "emotitrack_mean_confidence_ratio", "Mean confidence of the window's predictions."
    ).labels(**model).set(summary.predictions["current_mean_confidence"])
    gauge("emotitrack_monitoring_window_rows", "Rows in the last report's window.").labels(
        **model
    ).set(summary.counts["current"])
    gauge("emotitrack_monitoring_last_run_timestamp_seconds", "When the last report ran.").labels(
        **model
    ).set_to_current_time()
    push_to_gateway(gateway, job="emotitrack-monitoring", registry=registry, timeout=10)
