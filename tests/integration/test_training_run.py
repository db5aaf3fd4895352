"""A full training run on a small real sample, against an embedded MLflow store."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from mlflow import MlflowClient

from emotitrack.core.reference import REFERENCE_COLUMNS, load_reference
from tests.conftest import write_sample
from training.behaviour import default_checks
from training.data import DataError
from training.model import Hyperparameters
from training.presets import PRESETS
from training.settings import TrainingSettings
from training.train import TrainingResult, train

pytestmark = pytest.mark.integration


@pytest.fixture
def trained(settings: TrainingSettings) -> TrainingResult:
    return train(settings, Hyperparameters(max_features=20_000))


def test_run_logs_params_metrics_and_tags(
    trained: TrainingResult, settings: TrainingSettings
) -> None:
    run = MlflowClient().get_run(trained.run_id)
    assert run.data.params["C"] == "100.0" and run.data.params["max_features"] == "20000"
    assert run.data.params["nb_scaling"] == "true" and run.data.params["resolved_preset"] == "none"
    assert run.data.params["labels"] == "negative,positive"
    for split in ("val", "test"):
        for metric in (
            "accuracy",
            "f1_macro",
            "roc_auc",
            "log_loss",
            "ece",
            "precision_negative",
            "recall_positive",
        ):
            assert f"{split}_{metric}" in run.data.metrics
    assert run.data.metrics["test_accuracy"] > 0.75  # 1,440 real reviews are enough for that
    assert run.data.metrics["train_time_s"] > 0
    assert run.data.metrics["calibration_temperature"] > 0
    assert run.data.metrics["predict_latency_ms_p50"] > 0
    behaviour = {k: v for k, v in run.data.metrics.items() if k.startswith("behaviour_")}
    assert set(behaviour) == {f"behaviour_{c.name}" for c in default_checks()}
    assert run.data.metrics["model_size_bytes"] > 10_000
    assert run.data.metrics["data_test_rows"] == 600
    assert len(run.data.tags["data_digest"]) == 16
    assert len(run.data.tags["git_commit"]) in (40, len("unknown"))


def test_datasets_are_logged_with_digests(trained: TrainingResult) -> None:
    inputs = MlflowClient().get_run(trained.run_id).inputs.dataset_inputs
    contexts = {i.tags[0].value: i.dataset for i in inputs}
    assert set(contexts) == {"training", "validation", "evaluation"}
    assert all(d.digest for d in contexts.values())
    assert json.loads(contexts["evaluation"].profile)["num_rows"] == 600


def test_artifacts_a_person_looks_at(trained: TrainingResult) -> None:
    client = MlflowClient()
    evaluation = {Path(a.path).name for a in client.list_artifacts(trained.run_id, "evaluation")}
    assert evaluation == {
        "confusion_matrix.png",
        "roc_curve.png",
        "pr_curve.png",
        "classification_report.txt",
        "misclassified.csv",
        "reliability_diagram.png",
    }
    explanations = {
        Path(a.path).name for a in client.list_artifacts(trained.run_id, "explanations")
    }
    assert explanations == {"strongest_ngrams.csv", "strongest_ngrams.png"}
    behaviour = mlflow.artifacts.load_dict(f"runs:/{trained.run_id}/behaviour/report.json")
    assert {c["name"] for c in behaviour["checks"]} >= {"negation_of_positive", "contrast"}
    local = Path(
        mlflow.artifacts.download_artifacts(run_id=trained.run_id, artifact_path="evaluation")
    )
    assert (local / "confusion_matrix.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    wrong = pd.read_csv(local / "misclassified.csv")
    assert len(wrong) > 0 and (wrong["true_label"] != wrong["predicted_label"]).all()
    report = json.loads(
        Path(
            mlflow.artifacts.download_artifacts(
                run_id=trained.run_id, artifact_path="data/data_report.json"
            )
        ).read_text()
    )
    assert report["splits"]["test"]["rows"] == 600


def test_reference_sample_for_monitoring(trained: TrainingResult) -> None:
    reference = load_reference(trained.run_id)
    assert len(reference) == 200
    assert set(REFERENCE_COLUMNS) <= set(reference.columns)
    assert reference["confidence"].between(0.5, 1.0).all()
    assert set(reference["label"]) == {"negative", "positive"}


def test_registered_model_predicts_label_and_probabilities_per_row(
    trained: TrainingResult, settings: TrainingSettings
) -> None:
    assert trained.version == "1"
    model = mlflow.pyfunc.load_model(f"models:/{settings.model_name}/1")
    assert model.metadata.run_id == trained.run_id
    inputs = model.metadata.get_input_schema().input_names()
    assert inputs == ["text"]
    assert model.metadata.get_output_schema().input_names() == [
        "label",
        "confidence",
        "prob_negative",
        "prob_positive",
    ]
    texts = [
        "An absolute masterpiece, I loved every minute.",
        "Boring, stupid and way too long.",
    ] * 3
    out = model.predict(pd.DataFrame({"text": texts}))
    assert len(out) == 6  # one prediction per row, not one per column
    assert list(out["label"][:2]) == ["positive", "negative"]
    assert (out["prob_negative"] + out["prob_positive"]).round(9).eq(1).all()
    example = Path(mlflow.artifacts.download_artifacts(f"models:/{settings.model_name}/1"))
    assert (example / "input_example.json").is_file()


def test_same_seed_same_model(settings: TrainingSettings) -> None:
    hp = Hyperparameters(max_features=5_000)
    first, second = train(settings, hp), train(settings, hp)
    assert second.version == "2"
    for key in ("test_accuracy", "test_log_loss", "val_accuracy"):
        assert first.metrics[key] == second.metrics[key]


def test_three_class_data_trains(
    shared_data: Path, tmp_path: Path, settings: TrainingSettings
) -> None:
    data = write_sample(
        shared_data / "semeval2017_task4a", tmp_path / "semeval", {"train": 1500, "test": 600}
    )
    three_class = settings.model_copy(update={"data": data})
    with pytest.raises(DataError, match=r"3 classes .* --nb-scaling false"):
        train(three_class, Hyperparameters(max_features=5_000))  # before any run is started
    assert mlflow.search_runs(search_all_experiments=True, output_format="list") == []
    result = train(three_class, PRESETS["semeval"].updated(max_features=5_000), "semeval")
    model = mlflow.pyfunc.load_model(result.model_uri)
    out = model.predict(pd.DataFrame({"text": ["I love this!", "ok", "I hate it"]}))
    assert {"prob_negative", "prob_neutral", "prob_positive"} <= set(out.columns)
    assert "test_roc_auc" in result.metrics and "test_recall_neutral" in result.metrics


def test_calibration_folds_0_is_no_calibration_and_the_version_says_what_it_is(
    settings: TrainingSettings,
) -> None:
    # calibrate_on=validation (the SST-2 preset's) with calibration_folds 0: still off
    hp = Hyperparameters(
        max_features=5_000, nb_scaling=False, calibration_folds=0, calibrate_on="validation"
    )
    result = train(settings, hp)
    assert result.metrics["calibration_temperature"] == 1.0
    description = MlflowClient().get_model_version(settings.model_name, result.version).description
    assert description.startswith("TF-IDF (words 1-3) + LogisticRegression trained on ")
