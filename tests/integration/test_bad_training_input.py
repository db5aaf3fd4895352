"""Bad training input through the real command line: one line naming the problem, exit 2, and
nothing half-written in the registry (no run, no model version)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from mlflow import MlflowClient

pytestmark = pytest.mark.integration


def real_rows(imdb_sample: Path, split: str, n: int) -> pd.DataFrame:
    return pd.read_parquet(imdb_sample / f"{split}.parquet").head(n).reset_index(drop=True)


def corrupt_parquet(folder: Path, imdb_sample: Path) -> Path:
    (folder / "train.parquet").write_bytes(b"PAR1" + os.urandom(2048))  # magic, then garbage
    return folder


def truncated_parquet(folder: Path, imdb_sample: Path) -> Path:
    whole = (imdb_sample / "train.parquet").read_bytes()
    (folder / "train.parquet").write_bytes(whole[: len(whole) // 2])  # a copy cut short
    return folder


def wrong_columns(folder: Path, imdb_sample: Path) -> Path:
    rows = real_rows(imdb_sample, "train", 400).rename(columns={"text": "review"})
    rows.to_parquet(folder / "train.parquet")
    return folder


def labels_outside_train(folder: Path, imdb_sample: Path) -> Path:
    real_rows(imdb_sample, "train", 400).to_parquet(folder / "train.parquet")
    test = real_rows(imdb_sample, "test", 100)
    test.loc[:9, "label"] = "neutral"  # a class the model would never have seen
    test.to_parquet(folder / "test.parquet")
    return folder


def numeric_labels(folder: Path, imdb_sample: Path) -> Path:
    rows = real_rows(imdb_sample, "train", 400)
    rows["label"] = (rows["label"] == "positive").astype(int)
    rows.to_parquet(folder / "train.parquet")
    return folder


def missing_texts(folder: Path, imdb_sample: Path) -> Path:
    rows = real_rows(imdb_sample, "train", 400)
    rows.loc[17, "text"] = None
    rows.to_parquet(folder / "train.parquet")
    return folder


CASES: list[tuple[Callable[[Path, Path], Path], str]] = [
    (corrupt_parquet, "train.parquet: cannot be read as parquet"),
    (truncated_parquet, "train.parquet: cannot be read as parquet"),
    (wrong_columns, "missing column(s) ['text']; found ['review', 'label']"),
    (labels_outside_train, "test labels ['neutral'] never occur in train"),
    (numeric_labels, "column 'label' must hold strings, found integer"),
    (missing_texts, "1 missing text(s) in column 'text' (first at row 17)"),
]


@pytest.mark.parametrize(("make_data", "message"), CASES, ids=[c[0].__name__ for c in CASES])
def test_bad_data_is_one_line_exit_2_and_leaves_the_registry_untouched(
    make_data: Callable[[Path, Path], Path],
    message: str,
    imdb_sample: Path,
    tracking_uri: str,
    tmp_path: Path,
) -> None:
    (tmp_path / "data").mkdir()
    data = make_data(tmp_path / "data", imdb_sample)
    done = subprocess.run(
        [sys.executable, "-m", "emotitrack", "train", "--data", str(data), "--promote"],
        env={**os.environ, "MLFLOW_TRACKING_URI": tracking_uri},
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr[-3000:]
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and message in last, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    client = MlflowClient(tracking_uri)
    assert client.search_registered_models() == []
    runs = mlflow.search_runs(search_all_experiments=True, output_format="list")
    assert [r.info.status for r in runs] == []  # no run at all, so none left RUNNING
