"""Promotion: alias + stage, the gate, rollback and the record of who/why."""

from __future__ import annotations

import shutil
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from mlflow import MlflowClient

from emotitrack.cli import main
from training.data import TRAIN_FINGERPRINTS_ARTIFACT, Splits, load_labelled, make_splits
from training.model import Hyperparameters
from training.registry import PromotionError, PromotionRefused, production_version, promote
from training.settings import TrainingSettings
from training.train import train

pytestmark = pytest.mark.integration

GOOD = Hyperparameters(max_features=20_000)
# A deliberately weak challenger: a 20-word vocabulary cannot read reviews.
WEAK = Hyperparameters(max_features=20, ngram_max=1)


def production_run_ids(name: str) -> set[str]:
    """The run behind each way of naming Production."""
    return {
        mlflow.pyfunc.load_model(uri).metadata.run_id
        for uri in (f"models:/{name}@production", f"models:/{name}/Production")
    }


def test_promote_newest_sets_alias_and_stage(settings: TrainingSettings) -> None:
    result = train(settings, GOOD)
    done = promote(settings, reason="first model")
    assert (done.version, done.previous) == ("1", None)
    assert production_run_ids(settings.model_name) == {result.run_id}
    version = MlflowClient().get_model_version(settings.model_name, "1")
    assert version.current_stage == "Production"
    assert version.tags["promotion_reason"] == "first model"
    assert version.tags["promoted_by"] and version.tags["promoted_at"]
    assert "Promoted to Production" in version.description


def test_promoting_another_version_archives_the_previous(settings: TrainingSettings) -> None:
    first = train(settings, GOOD)
    second = train(settings, GOOD)
    promote(settings, first.version)
    promote(settings, second.version)
    client = MlflowClient()
    assert client.get_model_version(settings.model_name, "1").current_stage == "Archived"
    assert (
        client.get_model_version(settings.model_name, "2").tags["previous_production_version"]
        == "1"
    )
    assert production_run_ids(settings.model_name) == {second.run_id}


def test_gate_refuses_a_worse_challenger_and_keeps_the_champion(
    settings: TrainingSettings,
) -> None:
    champion = train(settings, GOOD)
    promote(settings)
    weak = train(settings, WEAK)
    with pytest.raises(PromotionRefused, match=r"challenger 0\.\d+ vs champion 0\.\d+") as refused:
        promote(settings, weak.version, gate=True)
    scores = [
        float(s)
        for s in str(refused.value).split("challenger ")[1].split(" (")[0].split(" vs champion ")
    ]
    assert scores[0] < scores[1] - settings.gate_tolerance
    assert production_run_ids(settings.model_name) == {champion.run_id}
    assert (
        "gate_refused_at"
        in MlflowClient().get_model_version(settings.model_name, weak.version).tags
    )


def test_gate_lets_an_equal_challenger_through(settings: TrainingSettings) -> None:
    train(settings, GOOD)
    promote(settings)
    again = train(settings, GOOD)  # same data and seed: same scores
    done = promote(settings, gate=True)
    assert done.gate is not None and done.gate.passed
    assert done.gate.challenger == done.gate.champion
    assert done.gate.rows == 160  # the challenger's validation split, never its test split
    assert production_run_ids(settings.model_name) == {again.run_id}


def test_cli_gate_refusal_exits_3_and_prints_both_scores(
    settings: TrainingSettings, capsys: pytest.CaptureFixture[str]
) -> None:
    train(settings, GOOD)
    promote(settings)
    train(settings, WEAK)
    code = main(["promote", "--gate", "--model-name", settings.model_name])
    err = capsys.readouterr().err
    assert code == 3
    assert "refused: gate REFUSED: accuracy challenger" in err and "vs champion" in err


def test_rollback_is_promoting_an_older_version(settings: TrainingSettings) -> None:
    first = train(settings, GOOD)
    train(settings, GOOD)
    promote(settings, "1")
    promote(settings, "2")
    done = promote(settings, "1", reason="rollback: v2 misbehaves")
    assert (done.version, done.previous) == ("1", "2")
    assert production_run_ids(settings.model_name) == {first.run_id}
    current = production_version(MlflowClient(), settings.model_name)
    assert current is not None and str(current.version) == "1"
    assert MlflowClient().get_model_version(settings.model_name, "2").current_stage == "Archived"


def test_unknown_version_is_a_clear_error(settings: TrainingSettings) -> None:
    train(settings, WEAK)
    with pytest.raises(Exception, match="version 7 not found"):
        promote(settings, "7")


def test_promoted_model_scores_held_out_text(settings: TrainingSettings) -> None:
    train(settings, GOOD)
    promote(settings)
    model = mlflow.pyfunc.load_model(f"models:/{settings.model_name}@production")
    test = pd.read_parquet(settings.data / "test.parquet")
    predictions = model.predict(test[["text"]])
    assert (predictions["label"].to_numpy() == test["label"].to_numpy()).mean() > 0.75


def test_gate_leaves_out_rows_the_champion_was_trained_on(settings: TrainingSettings) -> None:
    # Another seed draws another validation split: part of the challenger's validation rows
    # were in the champion's training split, and would flatter the champion.
    # (Its validation split is large so that enough of it is new to the champion.)
    train(settings.model_copy(update={"seed": 1}), GOOD)
    promote(settings)
    train(settings.model_copy(update={"seed": 2, "validation_fraction": 0.4}), GOOD)
    done = promote(settings, gate=True)

    def splits_of(seed: int, validation_fraction: float) -> Splits:
        data = load_labelled(settings.data)
        return make_splits(
            data, seed=seed, validation_fraction=validation_fraction, test_fraction=0.2, min_rows=2
        )

    seen_by_champion = set(splits_of(1, 0.1).train["text"])
    validation = splits_of(2, 0.4).validation["text"]
    overlap = int(validation.isin(seen_by_champion).sum())
    assert done.gate is not None and overlap > 0
    assert (done.gate.excluded, done.gate.rows) == (overlap, len(validation) - overlap)
    assert "left out: the champion trained on them" in done.gate.summary()


def test_gate_refuses_to_rebuild_data_that_changed(
    settings: TrainingSettings, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    shutil.copytree(settings.data, data)
    settings = settings.model_copy(update={"data": data})
    train(settings, GOOD)
    promote(settings)
    train(settings, GOOD)
    grown = pd.read_parquet(data / "train.parquet")
    pd.concat([grown, grown.head(40).assign(text=lambda f: f["text"] + " Again.")]).to_parquet(
        data / "train.parquet"
    )
    with pytest.raises(PromotionError, match="changed since version 2 was trained"):
        promote(settings, gate=True)
    assert str(production_version(MlflowClient(), settings.model_name).version) == "1"  # type: ignore[union-attr]


def test_gate_refuses_a_lower_is_better_metric(settings: TrainingSettings) -> None:
    train(settings, GOOD)
    promote(settings)
    train(settings, WEAK)
    for metric in ("log_loss", "ece"):
        with pytest.raises(PromotionError, match="cannot gate: choose one of"):
            promote(settings.model_copy(update={"gate_metric": metric}), gate=True)


def test_a_version_spelled_with_a_leading_zero_is_promoted_once(
    settings: TrainingSettings,
) -> None:
    train(settings, GOOD)
    promote(settings, "1")
    done = promote(settings, "01")
    assert (done.version, done.previous) == ("1", "1")
    version = MlflowClient().get_model_version(settings.model_name, "1")
    assert version.current_stage == "Production"
    assert mlflow.pyfunc.load_model(f"models:/{settings.model_name}/Production")


def test_gate_refuses_when_too_few_rows_are_new_to_the_champion(
    settings: TrainingSettings,
) -> None:
    train(settings.model_copy(update={"seed": 1}), GOOD)
    promote(settings)
    train(settings.model_copy(update={"seed": 2}), GOOD)  # ~90 % of its validation seen by v1
    with pytest.raises(PromotionError, match=r"only \d+ of the challenger's 160 validation rows"):
        promote(settings, gate=True)


def test_gate_rebuilds_the_training_rows_of_a_champion_that_recorded_none(
    settings: TrainingSettings,
) -> None:
    # Versions trained before runs kept fingerprints: same data and recipe, same splits.
    champion = train(settings, GOOD)
    promote(settings)
    artifacts = Path(mlflow.get_run(champion.run_id).info.artifact_uri.removeprefix("file://"))
    (artifacts / TRAIN_FINGERPRINTS_ARTIFACT).unlink()
    train(settings, GOOD)
    done = promote(settings, gate=True)
    assert done.gate is not None and (done.gate.rows, done.gate.excluded) == (160, 0)
