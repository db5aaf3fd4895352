"""Training, registration and promotion through a real MLflow tracking server on PostgreSQL."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from mlflow import MlflowClient

from harness.servers import mlflow_server, postgres_cluster
from training.model import Hyperparameters
from training.registry import promote
from training.settings import TrainingSettings
from training.train import train

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def server_uri(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    work = tmp_path_factory.mktemp("mlflow-server")
    with (
        postgres_cluster() as database,
        mlflow_server(database.url, work / "artifacts", work / "server.log") as url,
    ):
        yield url


@pytest.fixture
def remote(
    server_uri: str, imdb_sample: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> TrainingSettings:
    monkeypatch.chdir(tmp_path)  # nothing may land in a local store
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server_uri)
    mlflow.set_tracking_uri(server_uri)
    name = f"emotitrack-{tmp_path.name}"  # one registered model per test on the shared server
    return TrainingSettings(
        data=imdb_sample, tracking_uri=server_uri, model_name=name, reference_size=200, min_rows=50
    )


def test_train_register_promote_over_http(remote: TrainingSettings, tmp_path: Path) -> None:
    result = train(remote, Hyperparameters(max_features=20_000))
    promote(remote, result.version, reason="server test")
    run = MlflowClient().get_run(result.run_id)
    assert run.info.artifact_uri.startswith("mlflow-artifacts:/")
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "mlruns").exists()
    texts = pd.DataFrame({"text": ["Loved it, wonderful cast.", "Dreadful. I want my money back."]})
    for uri in (
        f"models:/{remote.model_name}@production",
        f"models:/{remote.model_name}/Production",
    ):
        model = mlflow.pyfunc.load_model(uri)
        assert model.metadata.run_id == result.run_id
        assert list(model.predict(texts)["label"]) == ["positive", "negative"]


def test_concurrent_training_runs_both_register(remote: TrainingSettings) -> None:
    env = {**os.environ, "MLFLOW_TRACKING_URI": remote.tracking_uri}
    command = [
        sys.executable, "-m", "training", "train",
        "--data", str(remote.data), "--model-name", remote.model_name, "--max-features", "5000",
    ]  # fmt: skip
    runs = [
        subprocess.Popen(
            command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    outputs = [run.communicate(timeout=600) for run in runs]
    for run, (_, err) in zip(runs, outputs, strict=True):
        assert run.returncode == 0, err[-2000:]
    client = MlflowClient()
    versions = client.search_model_versions(f"name = '{remote.model_name}'")
    assert sorted(int(v.version) for v in versions) == [1, 2]
    run_ids = {v.run_id for v in versions}
    assert len(run_ids) == 2
    assert all(client.get_run(r).info.status == "FINISHED" for r in run_ids)
    printed = {
        line.split()[2].rstrip(":")
        for out, _ in outputs
        for line in out.splitlines()
        if line.startswith("trained run")
    }
    assert printed == run_ids
