"""The monitoring job: reference vs. current window, Evidently report, outputs everywhere."""

from __future__ import annotations

import html
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
from emotitrack.core.prediction_log import PredictionReader, redacted_url
from emotitrack.core.progress import step
from emotitrack.core.reference import load_reference
from emotitrack.core.registry import ModelRef, ModelUnavailable, resolve
from monitoring.descriptors import describe_window, with_descriptors
from monitoring.drift import (
    TEXT_DRIFT_SKIPPED,
    DriftSummary,
    column_drifts,
    drifted_share,
    run_quality_report,
    run_report,
)
from monitoring.settings import MonitoringSettings

SUMMARY_FILE = "summary.json"
REPORT_FILE = "report.html"
QUALITY_FILE = "quality.html"


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

    def describe(self) -> dict[str, Any]:
        return {
            "start": self.since.isoformat() if self.since else None,
            "end": self.until.isoformat(),
            "last_records": self.last,
        }


def run_monitoring(
    settings: MonitoringSettings, *, last: int | None = None, all_versions: bool = False
) -> DriftSummary:
    """Build, write, log and export one drift report; return its summary."""
    mlflow.set_tracking_uri(settings.tracking_uri)
    now = datetime.now(UTC)
    window = Window(None if last else now - timedelta(hours=settings.window_hours), now, last)
    ref = _production(settings)
    with step(f"loading the reference sample of run {ref.run_id}"):
        reference = _reference(ref, settings)
    with step("reading the current window from the prediction log"):
        current = _current(settings, window, None if all_versions else ref.version)
    with step(f"loading {ref.load_uri} for its vocabulary"):
        describer = _describer(ref)
    reference = reference.rename(columns={"label": "true_label"})
    current = current.rename(columns={"label": "predicted_label"})
    # Seeded samples bound the report's time with the same verdicts (docs/benchmarks.md); the
    # summary's counts, label shares, confidences and quality use every row.
    report_reference = with_descriptors(_sample(reference, settings.max_report_rows), describer)
    report_current = describe_window(_sample(current, settings.max_report_rows), describer)
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
    summary = _summarise(snapshot, reference, current, ref, window, settings)
    if not with_text:
        summary.skipped_columns["text"] = TEXT_DRIFT_SKIPPED
    quality = None
    if summary.quality["current_accuracy"] is not None:
        with step(f"Evidently quality report on {summary.counts['feedback']} feedback labels"):
            classes = sorted(set(reference["true_label"]) | set(reference["predicted_label"]))
            quality = run_quality_report(reference, current.dropna(subset=["true_label"]), classes)
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
    if settings.pushgateway_url:
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


def _current(settings: MonitoringSettings, window: Window, version: str | None) -> pd.DataFrame:
    try:
        current = PredictionReader(settings.prediction_log_url).read(
            since=window.since, until=window.until, last=window.last, model_version=version
        )
    except Exception as exc:  # any store failure means the same thing here
        problem = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise MonitoringError(
            f"prediction log {redacted_url(settings.prediction_log_url)} unreadable: "
            f"{type(exc).__name__}: {problem}"
        ) from exc
    scope = f"model version {version}" if version else "all versions"
    if len(current) < settings.min_window_rows:
        raise MonitoringError(
            f"{len(current)} predictions in the window ({scope}); need at least {settings.min_window_rows} "
            "(widen --window-hours, use --last, or lower EMOTITRACK_MIN_WINDOW_ROWS)"
        )
    return current


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
    current: pd.DataFrame,
    ref: ModelRef,
    window: Window,
    settings: MonitoringSettings,
) -> DriftSummary:
    columns = column_drifts(snapshot)
    drifted, share = drifted_share(snapshot)
    feedback = current.dropna(subset=["true_label"])
    quality: dict[str, Any] = {
        "feedback_rows": len(feedback),
        "min_feedback": settings.min_feedback,
        "reference_accuracy": float(
            (reference["true_label"] == reference["predicted_label"]).mean()
        ),
        "current_accuracy": None,
    }
    if len(feedback) >= settings.min_feedback:
        quality["current_accuracy"] = float(
            (feedback["true_label"] == feedback["predicted_label"]).mean()
        )
    return DriftSummary(
        generated_at=window.until.isoformat(),
        window=window.describe(),
        model={"name": ref.name, "version": ref.version, "run_id": ref.run_id, "uri": ref.uri},
        counts={
            "reference": len(reference),
            "current": len(current),
            "feedback": len(feedback),
            "report_sample": min(len(current), settings.max_report_rows),
        },
        dataset_drift=share >= settings.drift_share,
        drift_share=share,
        drift_share_threshold=settings.drift_share,
        drifted_columns=drifted,
        columns=columns,
        predictions={
            "reference_label_shares": _shares(reference["predicted_label"]),
            "current_label_shares": _shares(current["predicted_label"]),
            "reference_mean_confidence": float(reference["confidence"].mean()),
            "current_mean_confidence": float(current["confidence"].mean()),
        },
        quality=quality,
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
        if summary.quality["current_accuracy"] is not None:
            metrics["current_accuracy"] = summary.quality["current_accuracy"]
        mlflow.log_metrics(metrics)
        mlflow.log_artifact(str(out / REPORT_FILE), "drift")
        if (out / QUALITY_FILE).is_file():
            mlflow.log_artifact(str(out / QUALITY_FILE), "drift")
        mlflow.log_dict(summary.to_dict(), f"drift/{SUMMARY_FILE}")
        return run.info.run_id


def push_to_prometheus(summary: DriftSummary, gateway: str) -> None:
    """Drift figures for Prometheus alerts. A batch job cannot be scraped, so it pushes."""
    from prometheus_client import CollectorRegistry, Gauge, push_to_gateway

    registry = CollectorRegistry()
    Gauge(
        "emotitrack_drift_detected", "1 if the last report found dataset drift.", registry=registry
    ).set(float(summary.dataset_drift))
    Gauge(
        "emotitrack_drift_share", "Share of monitored columns that drifted.", registry=registry
    ).set(summary.drift_share)
    score = Gauge(
        "emotitrack_drift_column_score",
        "Drift test score per column.",
        ["column"],
        registry=registry,
    )
    drifted = Gauge(
        "emotitrack_drift_column_drifted", "1 if the column drifted.", ["column"], registry=registry
    )
    for name, column in summary.columns.items():
        score.labels(column=name).set(column.score)
        drifted.labels(column=name).set(float(column.drifted))
    Gauge(
        "emotitrack_drift_current_rows", "Rows in the last report's window.", registry=registry
    ).set(summary.counts["current"])
    Gauge(
        "emotitrack_drift_last_run_timestamp_seconds",
        "When the last report ran.",
        registry=registry,
    ).set_to_current_time()
    push_to_gateway(gateway, job="emotitrack-monitoring", registry=registry, timeout=10)


def write_index(reports_dir: Path) -> Path:
    """``index.html``: every report with its window and verdict, newest first."""
    rows = []
    for summary_file in sorted(reports_dir.glob(f"*/{SUMMARY_FILE}"), reverse=True):
        summary = json.loads(summary_file.read_text())
        verdict = "DRIFT" if summary["dataset_drift"] else "no drift"
        folder = summary_file.parent.name
        rows.append(
            f"<tr class='{'drift' if summary['dataset_drift'] else 'ok'}'>"
            f"<td><a href='{html.escape(folder)}/{REPORT_FILE}'>{html.escape(summary['generated_at'])}</a></td>"
            f"<td>{html.escape(str(summary['window']['start']))} → {html.escape(summary['window']['end'])}</td>"
            f"<td>{html.escape(str(summary['model']['name']))} v{html.escape(str(summary['model']['version']))}</td>"
            f"<td>{summary['counts']['current']}</td><td>{verdict}</td>"
            f"<td>{summary['drifted_columns']} ({summary['drift_share']:.0%})</td>"
            f"<td><a href='{html.escape(folder)}/{SUMMARY_FILE}'>JSON</a></td></tr>"
        )
    page = reports_dir / "index.html"
    page.write_text(
        INDEX_TEMPLATE.format(rows="\n".join(rows) or "<tr><td colspan=7>no reports yet</td></tr>")
    )
    return page


INDEX_TEMPLATE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>EmotiTrack drift reports</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2rem; color: #222; }}
table {{ border-collapse: collapse; }} td, th {{ padding: .4rem .8rem; border-bottom: 1px solid #ddd; text-align: left; }}
tr.drift td {{ background: #fde8e8; }} tr.ok td {{ background: #eaf7ea; }}
</style></head><body>
<h1>EmotiTrack drift reports</h1>
<p>Live traffic from the prediction log compared with the Production model's training reference.</p>
<table><thead><tr><th>report</th><th>window</th><th>model</th><th>rows</th><th>verdict</th>
<th>drifted columns</th><th>summary</th></tr></thead>
<tbody>
{rows}
</tbody></table></body></html>
"""
