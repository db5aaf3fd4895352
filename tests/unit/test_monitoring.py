"""Descriptors, the drift summary, the index page and the job's exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from mlflow import MlflowClient
from pydantic import ValidationError
from sklearn.pipeline import Pipeline

from emotitrack.cli import build_parser, main
from emotitrack.core.descriptors import TextDescriber, describe_texts
from monitoring import job
from monitoring.descriptors import describe_window, with_descriptors
from monitoring.drift import (
    MONITORED_COLUMNS,
    ColumnDrift,
    DriftSummary,
    column_drifts,
    drifted_share,
    run_report,
)
from monitoring.job import DeliveryError, write_index
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


def test_index_lists_reports_newest_first(tmp_path: Path) -> None:
    for name, drift in (("20260101T000000Z", False), ("20260102T000000Z", True)):
        (tmp_path / name).mkdir()
        summary = {
            "generated_at": name, "dataset_drift": drift, "drift_share": 0.6 if drift else 0.0,
            "drifted_columns": 4 if drift else 0, "window": {"start": "s", "end": "e"},
            "model": {"name": "m", "version": "2"}, "counts": {"current": 500},
        }  # fmt: skip
        (tmp_path / name / "summary.json").write_text(json.dumps(summary))
    page = write_index(tmp_path).read_text()
    assert page.index("20260102T000000Z/report.html") < page.index("20260101T000000Z/report.html")
    assert "DRIFT" in page and "no drift" in page and "m v2" in page


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


def a_summary(mlflow_run_id: str = "") -> DriftSummary:
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
        predictions={"current_mean_confidence": 0.9},
        quality={"current_accuracy": None},
        report_html="reports/x/report.html",
        mlflow_run_id=mlflow_run_id,
    )


def test_summary_holds_the_documented_fields_only() -> None:
    documented = {
        "schema_version", "generated_at", "window", "model", "counts", "dataset_drift",
        "drift_share", "drift_share_threshold", "drifted_columns", "columns", "predictions",
        "quality", "report_html", "mlflow_run_id", "skipped_columns",
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
    assert out.startswith("DRIFT: 1 of 2 columns drifted (confidence)")
    assert f"MLflow run {logged or 'none'}" in out
    assert err.strip().splitlines() == [
        "error: Pushgateway http://gw unreachable; the report is in x"
    ]
