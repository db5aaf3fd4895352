"""Descriptors, the drift summary, the index page and the job's exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from sklearn.pipeline import Pipeline

from emotitrack.cli import main
from monitoring.descriptors import describe_window, with_descriptors
from monitoring.drift import MONITORED_COLUMNS, column_drifts, drifted_share, run_report
from monitoring.job import write_index
from serving.descriptors import TextDescriber, describe_texts
from training.model import Hyperparameters, build_pipeline


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
