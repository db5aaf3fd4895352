"""The local engine on a small model in the format: batches scored in order by a pool, the error
column, the summary, atomic output, and bad input stopping the job before anything is written."""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from batch import cli, local, worker
from batch.inputs import open_input
from batch.local import partial_path, score_local
from batch.model import JobModel
from batch.table import EMPTY_TEXT, NULL_TEXT, output_layout, too_long
from emotitrack.core import model_format
from emotitrack.core.registry import ModelRef
from training.export import to_format
from training.hyperparameters import Hyperparameters
from training.model import build_pipeline, fit_pipeline

REF = ModelRef("models:/m@production", "m", "7", "run7", "alias production", "models:/m/7")


@pytest.fixture(scope="module")
def model(imdb_sample: Path, tmp_path_factory: pytest.TempPathFactory) -> JobModel:
    """A small model trained on real reviews, written in the format."""
    train = pd.read_parquet(imdb_sample / "train.parquet")
    pipeline = build_pipeline(Hyperparameters(max_features=2_000), seed=0)
    fit_pipeline(pipeline, train["text"].tolist(), train["label"].tolist(), 0, seed=0)
    exported = to_format(pipeline)
    files = model_format.write(tmp_path_factory.mktemp("model"), exported.config, exported.arrays)
    classes = tuple(json.loads(files.config.read_text())["classes"])
    return JobModel(REF, files, classes)


@pytest.fixture(scope="module")
def reviews(imdb_sample: Path) -> pd.DataFrame:
    return pd.read_parquet(imdb_sample / "test.parquet").head(120)


def _expected(model: JobModel, texts: list[str]) -> np.ndarray:
    return model_format.read_files(model.files).probabilities(texts)


def _score(model: JobModel, source: str, out: Path, **options: int) -> local.Summary:
    settings = {"max_text_chars": 20_000, "batch_rows": 16, "workers": 1} | options
    return score_local(
        open_input(source, "text"), out, model, text_column="text", progress=False, **settings
    )


def test_a_pool_scores_every_batch_in_input_order(
    model: JobModel, reviews: pd.DataFrame, tmp_path: Path
) -> None:
    for i, (start, stop) in enumerate([(0, 50), (50, 51), (51, 120)]):  # uneven batches
        reviews.iloc[start:stop].to_parquet(tmp_path / f"part-{i}.parquet", index=False)
    out = tmp_path / "scored.parquet"
    summary = _score(model, str(tmp_path / "part-*.parquet"), out, workers=2, batch_rows=7)
    scored = pd.read_parquet(out)
    assert scored["text"].tolist() == reviews["text"].tolist()
    assert scored["input_label"].tolist() == reviews["label"].tolist()  # input `label` kept
    expected = _expected(model, reviews["text"].tolist())
    got = scored[[f"prob_{c}" for c in model.classes]].to_numpy()
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)
    assert scored["label"].tolist() == [model.classes[i] for i in expected.argmax(axis=1)]
    assert summary.rows == len(reviews) and sum(summary.labels.values()) == len(reviews)
    assert set(scored["model_version"]) == {"7"} and scored["error"].isna().all()
    assert not partial_path(out).exists()


def test_bad_texts_get_an_error_are_counted_and_do_not_stop_the_job(
    model: JobModel, tmp_path: Path
) -> None:
    texts = ["a wonderful film", None, "   ", "x" * 30, "dull and far too long", ""]
    pq.write_table(pa.table({"text": texts}), tmp_path / "in.parquet")
    out = tmp_path / "out.parquet"
    summary = _score(model, str(tmp_path / "in.parquet"), out, max_text_chars=25, batch_rows=2)
    scored = pd.read_parquet(out)
    errors = [None, NULL_TEXT, EMPTY_TEXT, too_long(25), None, EMPTY_TEXT]
    assert [e if isinstance(e, str) else None for e in scored["error"]] == errors
    assert scored["label"].isna().tolist() == [e is not None for e in errors]
    assert summary.errors == {EMPTY_TEXT: 2, NULL_TEXT: 1, too_long(25): 1}
    assert sum(summary.labels.values()) == 2
    line = summary.line(model)
    assert "scored 6 rows" in line and "error rows: 4" in line and str(out) in line


def test_batches_are_read_only_as_fast_as_they_are_scored(model: JobModel) -> None:
    """Streaming: the reader is never more than ``in_flight`` batches ahead of the writer."""
    read = 0

    def batches() -> Iterator[pa.RecordBatch]:
        nonlocal read
        for i in range(20):
            read += 1
            yield pa.record_batch({"text": [f"text {i}"]})

    layout = output_layout(pa.schema([("text", pa.string())]), model.classes)
    with local._scoring(model, 1) as score:
        written = 0
        for _ in local._scored_batches(batches(), score, layout, model, 0, 100, 3, local.Summary()):
            written += 1
            assert read - written <= 3
    assert written == 20


def test_a_failed_job_leaves_no_output_and_a_rerun_starts_clean(
    model: JobModel, reviews: pd.DataFrame, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reviews.to_parquet(tmp_path / "in.parquet", index=False)
    out = tmp_path / "out.parquet"
    out.write_bytes(b"the previous, complete output")
    calls = 0
    real = worker.probabilities

    def fails_on_the_third_batch(texts: list[str]) -> np.ndarray:
        nonlocal calls
        calls += 1
        if calls == 3:
            raise RuntimeError("scoring process died")
        return real(texts)

    monkeypatch.setattr(worker, "probabilities", fails_on_the_third_batch)
    with pytest.raises(RuntimeError, match="died"):
        _score(model, str(tmp_path / "in.parquet"), out)
    assert out.read_bytes() == b"the previous, complete output"  # untouched
    assert not partial_path(out).exists()

    monkeypatch.setattr(worker, "probabilities", real)
    partial_path(out).write_bytes(b"left by a killed run")
    summary = _score(model, str(tmp_path / "in.parquet"), out)
    assert summary.started_clean
    assert pq.read_metadata(out).num_rows == len(reviews)
    assert not partial_path(out).exists()


@pytest.mark.parametrize(
    ("make_input", "args", "message"),
    [
        (lambda d: None, ["missing.parquet"], "missing.parquet: no such file or folder"),
        (
            lambda d: pq.write_table(pa.table({"body": ["x"]}), d / "in.parquet"),
            ["in.parquet"],
            "no column 'text'",
        ),
        (lambda d: (d / "in.parquet").write_text("not parquet"), ["in.parquet"], "cannot read"),
        (lambda d: (d / "in.txt").write_text("text\n"), ["in.txt"], "not a .parquet or .csv"),
        (
            lambda d: pq.write_table(pa.table({"text": ["x"]}), d / "in.parquet"),
            ["in.parquet", "--workers", "0"],
            "--workers 0: Input should be greater than or equal to 1",
        ),
    ],
)
def test_bad_input_is_one_line_exit_2_and_nothing_written(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    make_input: object,
    args: list[str],
    message: str,
) -> None:
    monkeypatch.chdir(tmp_path)
    make_input(tmp_path)  # type: ignore[operator]
    before = set(tmp_path.iterdir())
    code = cli.main([args[0], "out.parquet", *args[1:]])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("error: ") and message in err
    assert set(tmp_path.iterdir()) == before


def test_the_spark_engine_without_pyspark_is_one_line_and_exit_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    pq.write_table(pa.table({"text": ["x"]}), tmp_path / "in.parquet")
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name: None if name == "pyspark" else real_find_spec(name),
    )
    assert cli.main(["in.parquet", "out", "--engine", "spark"]) == 2
    assert capsys.readouterr().err == (
        "error: the Spark engine needs pyspark: pip install 'emotitrack[spark]'\n"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.parquet"]
