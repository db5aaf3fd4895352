"""The ways users start work: `mlflow run` entry points and the `emotitrack demo` main job."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import mlflow
import pytest
from mlflow import MlflowClient

from emotitrack.core.prediction_log import PredictionReader
from harness.processes import free_port
from tests.conftest import REPO

pytestmark = pytest.mark.integration


def run_ok(command: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"{command} failed:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}"
    return done


def test_mlflow_run_train_then_promote(imdb_sample: Path, tracking_uri: str) -> None:
    # As with an activated virtualenv: the MLproject's `python` is the one running us.
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking_uri, "PATH": path}
    mlflow_cli = [sys.executable, "-m", "mlflow", "run", str(REPO), "--env-manager", "local"]
    run_ok(
        [*mlflow_cli, "-e", "train", "--experiment-name", "from-mlproject",
         "-P", f"data={imdb_sample}", "-P", "hyperparameters=max_features=5000,C=10", "-P", "seed=7"],
        REPO, env,
    )  # fmt: skip
    run_ok(
        [*mlflow_cli, "-e", "promote", "-P", "gate=true", "-P", "reason=mlproject test"], REPO, env
    )
    client = MlflowClient(tracking_uri)
    runs = mlflow.search_runs(experiment_names=["from-mlproject"], output_format="list")
    train_run = next(r for r in runs if "max_features" in r.data.params)
    params = train_run.data.params
    assert params["max_features"] == "5000" and params["C"] == "10.0" and params["seed"] == "7"
    assert params["preset"] == "auto" and params["resolved_preset"] == "imdb"  # from the path
    assert params["ngram_max"] == "3"
    production = client.get_model_version_by_alias("emotitrack-sentiment", "production")
    assert production.run_id == train_run.info.run_id
    assert production.tags["promotion_reason"] == "mlproject test"
    assert not (REPO / "mlflow.db").exists() or "mlflow.db" in (REPO / ".gitignore").read_text()


def test_mlflow_run_search(imdb_sample: Path, tracking_uri: str) -> None:
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking_uri, "PATH": path}
    run_ok(
        [sys.executable, "-m", "mlflow", "run", str(REPO), "--env-manager", "local",
         "-e", "search", "--experiment-name", "search-mlproject", "-P", f"data={imdb_sample}",
         "-P", "folds=2", "-P", "max_candidates=2",
         "-P", "hyperparameters=max_features=5000,calibration_folds=0"],
        REPO, env,
    )  # fmt: skip
    runs = mlflow.search_runs(experiment_names=["search-mlproject"], output_format="list")
    parent = next(r for r in runs if r.data.tags.get("emotitrack.kind") == "search")
    assert parent.data.params["metric"] == "auto" and parent.data.params["cv_metric"] == "accuracy"
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(children) == 3  # two candidates and the refit
    version = MlflowClient(tracking_uri).get_model_version("emotitrack-sentiment", "1")
    assert version.run_id == parent.data.tags["best_run_id"]


def test_demo_non_interactive(imdb_sample: Path, tracking_uri: str, tmp_path: Path) -> None:
    env = {**os.environ, "EMOTITRACK_DATA": str(imdb_sample)}
    done = run_ok([sys.executable, "-m", "emotitrack", "demo", "--no-ui"], tmp_path, env)
    assert "models:/emotitrack-sentiment@production -> version 1" in done.stdout
    assert "API: http://127.0.0.1:" in done.stdout and "200 predictions, " in done.stdout
    logged = PredictionReader(f"sqlite:///{tmp_path / 'predictions.db'}").read()
    assert len(logged) == 200 and set(logged["model_version"]) == {"1"}  # flushed on SIGTERM
    report_line = next(
        line for line in done.stdout.splitlines() if line.startswith("drift report (")
    )
    assert Path(report_line.split("file://", 1)[1]).is_file()
    assert (tmp_path / "reports" / "index.html").is_file()
    again = run_ok([sys.executable, "-m", "emotitrack", "demo", "--no-ui"], tmp_path, env)
    assert "-> version 2" in again.stdout  # same data, same seed: the gate lets it through


def test_demo_serves_the_mlflow_ui_until_interrupted(
    imdb_sample: Path, tracking_uri: str, tmp_path: Path
) -> None:
    env = {**os.environ, "EMOTITRACK_DATA": str(imdb_sample)}
    port = free_port()
    demo = subprocess.Popen(
        [sys.executable, "-m", "emotitrack", "demo", "--port", str(port)],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    try:
        assert demo.stdout is not None
        deadline = time.monotonic() + 300
        url_line = ""
        while time.monotonic() < deadline and not url_line:
            line = demo.stdout.readline()
            if not line:
                break
            if line.startswith("MLflow UI: "):
                url_line = line
        assert url_line.startswith(
            f"MLflow UI: http://127.0.0.1:{port}/#/models/emotitrack-sentiment"
        )
        api = f"http://127.0.0.1:{port}/api/2.0/mlflow/registered-models/get?name=emotitrack-sentiment"
        with urllib.request.urlopen(api, timeout=10) as response:
            assert b'"alias": "production"' in response.read()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as response:
            assert b"<html" in response.read().lower()
        demo.send_signal(signal.SIGINT)
        assert demo.wait(timeout=60) == 0
    finally:
        if demo.poll() is None:
            demo.kill()


def test_mlproject_search_takes_the_data_and_split_parameters_of_train() -> None:
    import shlex

    import yaml

    from training.cli import build_parser
    from training.settings import TrainingSettings

    entry_points = yaml.safe_load((REPO / "MLproject").read_text())["entry_points"]
    search = entry_points["search"]
    shared = ("text_column", "label_column", "validation_fraction", "test_fraction")
    assert {k: search["parameters"][k] for k in shared} == {
        k: entry_points["train"]["parameters"][k] for k in shared
    }
    given = {
        "text_column": "body",
        "label_column": "stars",
        "validation_fraction": 0.15,
        "test_fraction": 0.25,
    }
    values = {k: v["default"] for k, v in search["parameters"].items()} | given
    quoted = {k: shlex.quote(str(v)) for k, v in values.items()}  # "" as '', as MLflow does
    command = shlex.split(search["command"].format(**quoted))
    assert command[:4] == ["python", "-m", "training", "search"]
    args = build_parser(TrainingSettings()).parse_args(command[3:])
    assert {k: getattr(args, k) for k in shared} == given
