"""Descriptors, the drift summary, the index page and the job's exit codes."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient
from pydantic import ValidationError
from sklearn.pipeline import Pipeline

from emotitrack.cli import build_parser, main
from emotitrack.core.descriptors import DESCRIPTOR_COLUMNS, TextDescriber, describe_texts
from monitoring import job, verdicts
from monitoring.descriptors import describe_window, with_descriptors
from monitoring.drift import (
    MONITORED_COLUMNS,
    ColumnDrift,
    DriftSummary,
    column_drifts,
    drifted_share,
    run_report,
)
from monitoring.estimation import (
    AccuracyEstimate,
    estimate_accuracy,
    fit_calibration,
    measure_accuracy,
)
from monitoring.job import DeliveryError
from monitoring.settings import MonitoringSettings
from training.model import Hyperparameters, build_pipeline
from training.settings import TrainingSettings


def test_descriptors() -> None:
    vocabulary = {"good", "film"}
    table = describe_texts(
        ["good film!!", "zzz qqq", ""], lambda t: t.replace("!", "").split(), vocabulary
    )
    assert table["word_count"].tolist() == [2, 2, 0]
    assert table["oov_share"].tolist() == [0.0, 1.0, 1.0]
    assert table["text_length"].tolist() == [11, 7, 0]
    assert table.loc[0, "non_letter_share"] == pytest.approx(3 / 11)  # a space and two "!"


@pytest.fixture(scope="module")
def small_model(imdb_sample: Path) -> Pipeline:
    train = pd.read_parquet(imdb_sample / "train.parquet")
    return build_pipeline(Hyperparameters(max_features=5_000), seed=0).fit(
        train["text"].tolist(), train["label"].tolist()
    )


def frame(texts: list[str], labels: list[str], confidence: float) -> pd.DataFrame:
    return pd.DataFrame({"text": texts, "predicted_label": labels, "confidence": confidence})


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # constant texts
def test_drift_summary_parses_every_monitored_column(
    small_model: Pipeline, imdb_sample: Path
) -> None:
    reviews = pd.read_parquet(imdb_sample / "test.parquet")["text"].tolist()
    reference = with_descriptors(
        frame(reviews[:300], ["positive", "negative"] * 150, 0.9), small_model
    )
    same = with_descriptors(
        frame(reviews[300:600], ["positive", "negative"] * 150, 0.9), small_model
    )
    shifted = with_descriptors(frame(["ok"] * 300, ["negative"] * 300, 0.55), small_model)
    calm = column_drifts(run_report(reference, same, drift_share=0.5))
    loud_report = run_report(reference, shifted, drift_share=0.5)
    loud = column_drifts(loud_report)
    assert set(calm) == set(loud) == set(MONITORED_COLUMNS)
    assert not calm["predicted_label"].drifted and loud["predicted_label"].drifted
    assert loud["text_length"].drifted and loud["text"].drifted
    count, share = drifted_share(loud_report)
    assert count == sum(c.drifted for c in loud.values()) and share == pytest.approx(
        count / len(loud)
    )


def test_column_verdicts_are_evidentlys_when_the_threshold_is_no_score_cutoff(
    small_model: Pipeline, imdb_sample: Path
) -> None:
    """With at most 1,000 reference rows Evidently tests text drift with its percentile test:
    its threshold (0.95) sets a bootstrap percentile, so "score >= threshold" is no verdict.
    The column's verdict must be the one DriftedColumnsCount counts."""
    reviews = pd.read_parquet(imdb_sample / "test.parquet")["text"].tolist()
    labels = ["positive", "negative"] * 150
    reference = with_descriptors(frame(reviews[:300], labels, 0.9), small_model)
    marked = [f"{r} Fast shipping, the seller refunded the warranty." for r in reviews[450:600]]
    current = with_descriptors(frame(reviews[300:450] + marked, labels, 0.9), small_model)
    report = run_report(reference, current, drift_share=0.5)
    text = column_drifts(report)["text"]
    assert text.method == "Percentile text content drift" and text.score < text.threshold
    assert text.drifted  # half the texts are about shipping: the domain classifier tells them
    count, _ = drifted_share(report)
    assert count == sum(c.drifted for c in column_drifts(report).values())


def test_report_samples_stay_above_evidentlys_small_data_switch() -> None:
    """Evidently picks its small-data tests at 1,000 reference rows or fewer, not below 1,000."""
    with pytest.raises(ValidationError, match="greater than 1000"):
        MonitoringSettings(max_report_rows=1_000)
    assert MonitoringSettings(max_report_rows=1_001).max_report_rows == 1_001


def test_monitor_without_a_model_exits_2_with_one_line(
    tracking_uri: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["monitor", "--reports-dir", str(tmp_path / "reports")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err[-1].startswith(
        "error: models:/emotitrack-sentiment@production does not name a model version yet"
    )
    assert not (tmp_path / "reports").exists()


def test_a_window_mixing_logged_texts_and_logged_descriptors(small_model: Pipeline) -> None:
    """Rows with a text get descriptors computed from it; rows logged without one (the API ran
    with EMOTITRACK_STORE_TEXT=false for part of the window) keep the descriptors it logged."""
    logged = {"text_length": 42.0, "word_count": 7.0, "oov_share": 0.25, "non_letter_share": 0.1}
    window = pd.DataFrame(
        {
            "text": ["good film", None],
            "predicted_label": ["positive", "negative"],
            **{name: [None, value] for name, value in logged.items()},
        }
    )
    described = describe_window(window, TextDescriber.for_pipeline(small_model))
    assert described.loc[0, "word_count"] == 2 and described.loc[0, "text_length"] == 9
    assert described.loc[0, "oov_share"] == 0.0  # both words are in an IMDB vocabulary
    assert described.loc[1, list(logged)].tolist() == list(logged.values())
    assert list(described["predicted_label"]) == ["positive", "negative"]


def a_summary(
    mlflow_run_id: str = "", data: bool = True, prediction: bool = False, quality: bool = False
) -> DriftSummary:
    return DriftSummary(
        generated_at="2026-01-02T00:00:00+00:00",
        window={"start": None, "end": "2026-01-02T00:00:00+00:00", "last_records": 100},
        model={"name": "m", "version": "1", "run_id": "r", "uri": "models:/m@production"},
        counts={"reference": 200, "current": 100, "feedback": 0, "report_sample": 100},
        dataset_drift=True,
        drift_share=0.5,
        drift_share_threshold=0.4,
        drifted_columns=1,
        columns={
            "confidence": ColumnDrift("K-S p_value", 0.001, 0.05, True),
            "predicted_label": ColumnDrift("Z-test p_value", 0.5, 0.05, False),
        },
        predictions={"current_mean_confidence": 0.9, "current_label_shares": {"negative": 1.0}},
        quality={
            "current_accuracy": None,
            "reference_accuracy": 0.9,
            "estimated_accuracy": 0.8,
            "estimated_accuracy_interval": [0.75, 0.85],
            "measured_accuracy": None,
        },
        report_html="reports/x/report.html",
        mlflow_run_id=mlflow_run_id,
        verdicts={
            "data_drift": {"detected": data, "reason": "d"},
            "prediction_drift": {"detected": prediction, "reason": "p"},
            "quality": {"detected": quality, "reason": "q"},
        },
    )


def test_summary_holds_the_documented_fields_only() -> None:
    documented = {
        "schema_version", "generated_at", "window", "model", "counts", "dataset_drift",
        "drift_share", "drift_share_threshold", "drifted_columns", "columns", "predictions",
        "quality", "report_html", "mlflow_run_id", "skipped_columns", "verdicts", "shadow",
    }  # fmt: skip
    assert set(a_summary().to_dict()) == documented


@pytest.mark.parametrize(
    ("given", "fail_on_drift"),
    [([], False), (["--fail-on-drift"], True), (["--fail-on-drift", "true"], True),
     (["--fail-on-drift", "false"], False)],
    ids=["absent", "flag", "true", "false"],
)  # fmt: skip
def test_fail_on_drift_takes_the_value_mlproject_passes(
    given: list[str], fail_on_drift: bool
) -> None:
    args = build_parser(TrainingSettings()).parse_args(["monitor", *given])
    assert args.fail_on_drift is fail_on_drift


@pytest.mark.parametrize(
    ("option", "value", "problem"),
    [("--min-rows", "0", "--min-rows 0: Input should be greater than or equal to 10"),
     ("--window-hours", "-5", "--window-hours -5.0: Input should be greater than 0")],
    ids=["min-rows", "window-hours"],
)  # fmt: skip
def test_out_of_range_options_exit_2_with_one_line(
    option: str,
    value: str,
    problem: str,
    tracking_uri: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    code = main(["monitor", option, value, "--reports-dir", str(tmp_path / "reports")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err == [f"error: {problem}"]  # before looking for a model
    assert not (tmp_path / "reports").exists()


def test_under_mlflow_run_the_report_is_logged_into_its_run(
    tracking_uri: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`mlflow run` starts a run in the experiment it was given and names it in MLFLOW_RUN_ID:
    the job logs into that run rather than into one of its own experiment."""
    experiment = mlflow.create_experiment("from-mlflow-run")
    started = MlflowClient(tracking_uri).create_run(experiment)
    monkeypatch.setenv("MLFLOW_RUN_ID", started.info.run_id)
    out = tmp_path / "report"
    out.mkdir()
    (out / "report.html").write_text("<html></html>")
    settings = MonitoringSettings(tracking_uri=tracking_uri)
    run_id = job._log_to_mlflow(a_summary(), out, settings)
    assert run_id == started.info.run_id
    run = MlflowClient(tracking_uri).get_run(run_id)
    assert run.info.experiment_id == experiment and run.data.metrics["drifted_columns"] == 1
    metrics = run.data.metrics  # each verdict its own metric
    assert (metrics["data_drift"], metrics["prediction_drift"], metrics["quality_degraded"]) == (
        1,
        0,
        0,
    )
    assert metrics["estimated_accuracy"] == 0.8 and metrics["estimated_accuracy_lower"] == 0.75
    assert "measured_accuracy" not in metrics  # no feedback: not 0, absent
    assert mlflow.get_experiment_by_name(settings.monitoring_experiment) is None


@pytest.mark.parametrize(
    ("logged", "code"), [("", 4), ("abc123", 5)], ids=["not-logged", "not-pushed"]
)
def test_a_written_but_undelivered_report_prints_its_verdict_and_its_own_exit_code(
    logged: str,
    code: int,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Distinct from 2 (nothing written) and outranking 3 (drift): the scheduler learns that a
    destination failed, the log still shows the verdict."""

    def undelivered(*_: object, **__: object) -> DriftSummary:
        raise DeliveryError(
            "Pushgateway http://gw unreachable; the report is in x", a_summary(logged)
        )

    monkeypatch.setattr(job, "run_monitoring", undelivered)
    assert main(["monitor", "--fail-on-drift"]) == code
    out, err = capsys.readouterr()
    assert out.startswith("DRIFT: data drift: YES (d); prediction drift: no (p); quality: no (q)")
    assert f"MLflow run {logged or 'none'}" in out
    assert err.strip().splitlines() == [
        "error: Pushgateway http://gw unreachable; the report is in x"
    ]


def test_estimated_accuracy_is_the_mean_confidence_with_a_poisson_binomial_interval() -> None:
    estimate = estimate_accuracy([0.9] * 100)
    half = 1.959963984540054 * math.sqrt(100 * 0.9 * 0.1) / 100
    assert estimate.accuracy == pytest.approx(0.9)
    assert estimate.interval() == pytest.approx([0.9 - half, 0.9 + half])
    assert estimate_accuracy([1.0, 1.0]).interval() == [1.0, 1.0]  # certain: no spread
    with pytest.raises(ValueError, match="no confidences"):
        estimate_accuracy([])


def test_calibrated_estimates_cover_the_measured_accuracy() -> None:
    """A model whose confidences run 8 points high: calibrated on a labelled reference, the
    estimate's interval holds the accuracy measured on fresh windows about 95 % of the time;
    the raw mean confidence misses it."""
    rng = np.random.default_rng(3)

    def rows(n: int) -> tuple[np.ndarray, np.ndarray]:
        truth = rng.uniform(0.55, 0.92, n)  # the real chance of being right
        return np.minimum(truth + 0.08, 1.0), rng.uniform(size=n) < truth

    calibration = fit_calibration(*rows(5_000))
    covered = raw_covered = 0
    for _ in range(200):
        confidence, right = rows(500)
        measured = right.mean()
        estimate = estimate_accuracy(confidence, calibration)
        covered += estimate.lower <= measured <= estimate.upper
        raw = estimate_accuracy(confidence)
        raw_covered += raw.lower <= measured <= raw.upper
    assert covered >= 180 and raw_covered <= 20


def test_measured_accuracy_has_a_wilson_interval() -> None:
    measured = measure_accuracy(45, 50)
    assert measured.accuracy == 0.9
    assert measured.lower == pytest.approx(0.7864, abs=1e-3)
    assert measured.upper == pytest.approx(0.9565, abs=1e-3)
    assert measure_accuracy(50, 50).upper == 1.0


def predictions(negative: int, positive: int, confidence: float = 0.9) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "predicted_label": ["negative"] * negative + ["positive"] * positive,
            "true_label": ["negative"] * negative + ["positive"] * positive,
            "confidence": np.linspace(confidence - 0.05, confidence + 0.05, negative + positive),
        }
    )


def prediction_verdict(reference: pd.DataFrame, current: pd.DataFrame) -> dict[str, Any]:
    settings = MonitoringSettings()
    return verdicts.prediction_drift(
        reference,
        current,
        p_value=settings.prediction_drift_p_value,
        min_label_change=settings.min_label_share_change,
        min_confidence_change=settings.min_confidence_change,
    )


def test_a_label_prior_shift_is_prediction_drift() -> None:
    reference = predictions(2_500, 2_500)
    shifted = prediction_verdict(reference, predictions(450, 50))
    assert shifted["detected"] and shifted["label_shares_drifted"]
    assert shifted["label_share_change"] == pytest.approx(0.4)
    assert shifted["reason"].startswith("label shares moved (largest change +0.400")
    assert not prediction_verdict(reference, predictions(255, 245))["detected"]
    # a change too small to matter is not drift, however many rows make it significant
    small = prediction_verdict(predictions(50_000, 50_000), predictions(52_000, 48_000))
    assert small["label_shares_p_value"] < 1e-6 and not small["detected"]


def test_a_confidence_drop_is_prediction_drift() -> None:
    reference = predictions(2_500, 2_500, confidence=0.9)
    dropped = prediction_verdict(reference, predictions(250, 250, confidence=0.8))
    assert dropped["detected"] and dropped["confidence_drifted"]
    assert not dropped["label_shares_drifted"]
    assert dropped["confidence_change"] == pytest.approx(-0.1)


def test_quality_is_degraded_by_the_estimate_or_by_enough_labels() -> None:
    high, low = AccuracyEstimate(0.9, 0.88, 0.92), AccuracyEstimate(0.8, 0.77, 0.83)
    assert not verdicts.quality(0.9, high, None, margin=0.03)["detected"]
    estimated = verdicts.quality(0.9, low, None, margin=0.03)
    assert estimated["detected"] and estimated["estimated_degraded"]
    assert "no measured accuracy" in estimated["reason"]
    few = measure_accuracy(8, 10)  # 0.8 measured, but its interval reaches past 0.9
    assert not verdicts.quality(0.9, high, few, margin=0.03)["detected"]
    many = measure_accuracy(400, 500)
    measured = verdicts.quality(0.9, high, many, margin=0.03)
    assert measured["detected"] and measured["measured_degraded"]


def test_data_drift_counts_only_the_data_columns() -> None:
    def columns(*drifted: str) -> dict[str, ColumnDrift]:
        names = [*verdicts.DATA_COLUMNS, "confidence", "predicted_label"]
        return {
            n: ColumnDrift("Wasserstein distance (normed)", 0.2, 0.1, n in drifted) for n in names
        }

    predictions_only = verdicts.data_drift(columns("confidence", "predicted_label"), 0.6)
    assert not predictions_only["detected"] and predictions_only["drifted_columns"] == []
    texts = verdicts.data_drift(columns("text", "oov_share", "text_length"), 0.6)
    assert texts["detected"] and texts["reason"].startswith("3 of 5 data columns drifted")
    without_text = {k: v for k, v in columns("oov_share", "text_length").items() if k != "text"}
    assert verdicts.data_drift(without_text, 0.5)["tested_columns"] == list(DESCRIPTOR_COLUMNS)


@pytest.mark.parametrize(
    ("fail_on", "code"),
    [([], 3), (["--fail-on", "prediction"], 0), (["--fail-on", "prediction,quality"], 0),
     (["--fail-on", "quality,data"], 3), (["--fail-on", "all"], 3)],
    ids=["default-all", "prediction-only", "two-quiet", "two-with-data", "all"],
)  # fmt: skip
def test_fail_on_names_the_verdicts_that_count(
    fail_on: list[str],
    code: int,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Only data drift was found: it fails the run only where `--fail-on` counts it."""
    summary = a_summary("abc", data=True, prediction=False, quality=False)
    monkeypatch.setattr(job, "run_monitoring", lambda *_, **__: summary)
    assert main(["monitor", "--fail-on-drift", *fail_on]) == code
    out = capsys.readouterr().out
    assert out.startswith("DRIFT: " if code else "no drift: ")
    assert main(["monitor", *fail_on]) == 0  # without --fail-on-drift: reported, never failed


@pytest.mark.parametrize(
    ("given", "problem"),
    [(["--fail-on", "data,labels"], "argument --fail-on: expected a comma-separated list"),
     (["--last", "-5"], "--last -5: expected 0 (window by hours) or more")],
    ids=["unknown-verdict", "negative-last"],
)  # fmt: skip
def test_bad_verdict_names_and_windows_exit_2_with_one_line(
    given: list[str], problem: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    try:
        code = main(["monitor", *given, "--reports-dir", str(tmp_path / "reports")])
    except SystemExit as exc:  # argparse's own error exit
        code = int(str(exc.code))
    assert code == 2 and problem in capsys.readouterr().err
    assert not (tmp_path / "reports").exists()


def test_last_takes_the_float_mlproject_passes() -> None:
    args = build_parser(TrainingSettings()).parse_args(["monitor", "--last", "500.0"])
    assert args.last == 500 and args.fail_on == ["data", "prediction", "quality"]
