"""The search command: cross-validated candidates as child runs, the best refitted and registered."""

from __future__ import annotations

import logging
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from mlflow import MlflowClient

from training.cli import main

pytestmark = pytest.mark.integration


def test_search_logs_candidates_as_child_runs_and_registers_the_best(
    imdb_sample: Path,
    tracking_uri: str,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="emotitrack")
    code = main(
        ["search", "--data", str(imdb_sample), "--folds", "2", "--max-candidates", "4",
         "--experiment", "search-test", "--hyperparameters", "max_features=5000",
         "--calibration-folds", "2", "--negation", "true"]
    )  # fmt: skip
    assert code == 0
    runs = mlflow.search_runs(experiment_names=["search-test"], output_format="list")
    parent = next(r for r in runs if r.data.tags.get("emotitrack.kind") == "search")
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    candidates = [r for r in children if r.data.tags.get("emotitrack.kind") == "search-candidate"]
    assert len(candidates) == 4 and parent.data.params["candidates"] == "4"
    scores = {r.data.tags["mlflow.runName"]: r.data.metrics["cv_accuracy"] for r in candidates}
    assert all(0.5 < s <= 1 for s in scores.values())
    assert all(r.data.params["max_features"] == "5000" for r in candidates)  # override kept
    # Given on the command line, so not searched: every candidate marks negations.
    assert all(r.data.params["negation"] == "true" for r in candidates)
    assert parent.data.params["fixed"] == "calibration_folds,max_features,negation"
    assert parent.data.metrics["best_cv_accuracy"] == max(scores.values())

    [refit] = [r for r in children if r.data.tags.get("mlflow.runName") == "best refit"]
    best = max(candidates, key=lambda r: r.data.metrics["cv_accuracy"])
    for key in ("C", "ngram_max", "nb_scaling", "negation"):
        assert refit.data.params[key] == best.data.params[key]
        assert parent.data.params[f"best_{key}"] == best.data.params[key]
    assert "test_accuracy" in refit.data.metrics and "test_accuracy" in parent.data.metrics
    version = MlflowClient().get_model_version("emotitrack-sentiment", "1")
    assert version.run_id == refit.info.run_id == parent.data.tags["best_run_id"]

    table = pd.read_csv(
        mlflow.artifacts.download_artifacts(
            run_id=parent.info.run_id, artifact_path="search_results.csv"
        )
    )
    assert len(table) == 4 and table["cv_accuracy"].is_monotonic_decreasing
    assert "registered models:/emotitrack-sentiment/1" in capsys.readouterr().out
    assert "[4/4] fold 2/2" in caplog.text  # progress while it runs


def test_search_on_three_classes_uses_average_recall_without_nb_scaling(
    shared_data: Path, tmp_path: Path, tracking_uri: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.conftest import write_sample

    data = write_sample(
        shared_data / "semeval2017_task4a", tmp_path / "semeval", {"train": 600, "test": 300}
    )
    code = main(["search", "--data", str(data), "--preset", "none", "--max-candidates", "2"])
    assert code == 0  # the three-class grid has no NB scaling: it runs
    assert "best cv recall_macro" in capsys.readouterr().out
    runs = mlflow.search_runs(search_all_experiments=True, output_format="list")
    parent = next(r for r in runs if r.data.tags.get("emotitrack.kind") == "search")
    assert parent.data.params["cv_metric"] == "recall_macro"
