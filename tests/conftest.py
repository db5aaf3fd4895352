"""Fixtures shared by every kind of test: the real data and an embedded MLflow store."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import mlflow
import pytest

from harness.data import shared_data_root, write_sample
from training.settings import TrainingSettings

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def no_inherited_experiment() -> Iterator[None]:
    """``mlflow.set_experiment`` exports MLFLOW_EXPERIMENT_ID to the process environment; a test
    that trains in-process would otherwise hand its experiment to the next test's subprocesses
    (and `mlflow run` refuses an experiment id next to --experiment-name)."""
    for name in ("MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME"):
        os.environ.pop(name, None)
    yield
    for name in ("MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME"):
        os.environ.pop(name, None)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` (or ``EMOTITRACK_SHARED_DATA``). Missing data fails the run: no skips."""
    path = shared_data_root()
    if not (path / "imdb" / "train.parquet").is_file():
        pytest.fail(f"real data not found at {path}; set EMOTITRACK_SHARED_DATA", pytrace=False)
    return path


@pytest.fixture(scope="session")
def imdb_sample(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """1,600 real IMDB training reviews and 600 test reviews."""
    out = tmp_path_factory.mktemp("imdb-sample")
    return write_sample(shared_data / "imdb", out, {"train": 1600, "test": 600})


@pytest.fixture
def tracking_uri(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A fresh embedded store (SQLite + local artifacts) in this test's folder."""
    monkeypatch.chdir(tmp_path)  # MLflow puts local artifacts under the working folder
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    mlflow.set_tracking_uri(uri)
    yield uri
    if mlflow.active_run():
        mlflow.end_run()


@pytest.fixture
def settings(imdb_sample: Path, tracking_uri: str) -> TrainingSettings:
    return TrainingSettings(
        data=imdb_sample, tracking_uri=tracking_uri, reference_size=200, min_rows=50
    )
