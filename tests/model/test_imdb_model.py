"""Behaviour of the default model trained on all of IMDB, loaded back from the registry."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest

from training.behaviour import markdown_table, run_checks
from training.presets import detect_preset, hyperparameters_for
from training.settings import TrainingSettings
from training.train import TrainingResult, train

pytestmark = pytest.mark.model

POSITIVE = [
    "A wonderful film with a brilliant cast.",
    "I loved every minute of it.",
    "One of the best movies I have ever seen.",
    "Beautifully shot and superbly acted.",
    "Funny, touching and smart. Highly recommended.",
    "An excellent story, great performances.",
    "A masterpiece. Watch it.",
    "Great fun from start to finish.",
    "The acting was superb and the music perfect.",
    "A delightful, charming movie.",
]
NEGATIVE = [
    "A terrible film with awful acting.",
    "I hated every minute of it.",
    "One of the worst movies I have ever seen.",
    "Boring, badly shot and poorly acted.",
    "Stupid, dull and far too long. Avoid.",
    "A waste of time and money.",
    "The plot makes no sense and the dialogue is laughable.",
    "Utterly disappointing.",
    "Horrible script, horrible direction.",
    "Save yourself the pain and skip this one.",
]


@pytest.fixture(scope="module")
def imdb_model(
    shared_data: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[TrainingResult, mlflow.pyfunc.PyFuncModel]]:
    work = tmp_path_factory.mktemp("imdb-model")
    uri = f"sqlite:///{work / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(work)
        patch.delenv("MLFLOW_RUN_ID", raising=False)
        settings = TrainingSettings(data=shared_data / "imdb", tracking_uri=uri)
        preset = detect_preset(settings.data)  # what `emotitrack train --data .../imdb` uses
        result = train(settings, hyperparameters_for(preset, {}), preset)
        yield result, mlflow.pyfunc.load_model(result.model_uri)


def predict(model: mlflow.pyfunc.PyFuncModel, texts: list[str]) -> pd.DataFrame:
    return model.predict(pd.DataFrame({"text": texts}))


def test_accuracy_calibration_and_size_meet_the_targets(
    imdb_model: tuple[TrainingResult, object],
) -> None:
    result, _ = imdb_model
    logged = mlflow.MlflowClient().get_run(result.run_id).data
    assert logged.params["resolved_preset"] == "imdb"
    assert logged.metrics["data_test_rows"] == 25_000  # the whole official test split
    assert result.metrics["test_accuracy"] >= 0.913  # NBSVM-bigram: 91.22 (Wang & Manning 2012)
    assert result.metrics["test_ece"] <= 0.02
    assert result.metrics["model_size_bytes"] <= 150e6


def probabilities_of(model: mlflow.pyfunc.PyFuncModel, texts: list[str]) -> np.ndarray:
    return predict(model, texts)[["prob_negative", "prob_positive"]].to_numpy()


def test_behavioural_checks_keep_their_minimum_pass_rates(
    imdb_model: tuple[TrainingResult, mlflow.pyfunc.PyFuncModel],
) -> None:
    result, model = imdb_model
    results = run_checks(lambda texts: probabilities_of(model, texts), ["negative", "positive"])
    failing = {r.name: r.failures for r in results if not r.ok}
    assert not failing, f"{markdown_table(results)}\n{failing}"
    logged = mlflow.artifacts.load_dict(f"runs:/{result.run_id}/behaviour/report.json")
    assert logged["all_ok"] and len(logged["checks"]) == len(results)


def test_explanations_name_the_ngrams_that_decided(
    imdb_model: tuple[TrainingResult, mlflow.pyfunc.PyFuncModel],
) -> None:
    _, model = imdb_model
    texts = ["A brilliant, moving film.", "A boring waste of time."]
    out = model.predict(pd.DataFrame({"text": texts}), params={"explain": True})
    praise, scorn = (json.loads(e) for e in out["explanation"])
    assert {"brilliant", "moving"} & {item["ngram"] for item in praise["positive"][:3]}
    assert {"boring", "waste", "waste of"} & {item["ngram"] for item in scorn["negative"][:3]}
    assert all(item["contribution"] > 0 for item in praise["positive"] + scorn["negative"])


def test_minimum_functionality_on_short_reviews(
    imdb_model: tuple[TrainingResult, mlflow.pyfunc.PyFuncModel],
) -> None:
    _, model = imdb_model
    out = predict(model, POSITIVE + NEGATIVE)
    expected = ["positive"] * len(POSITIVE) + ["negative"] * len(NEGATIVE)
    pass_rate = (out["label"].to_numpy() == expected).mean()
    assert pass_rate >= 0.9, out.assign(expected=expected, text=POSITIVE + NEGATIVE).to_string()


def test_adding_praise_or_scorn_moves_the_score_the_right_way(
    imdb_model: tuple[TrainingResult, mlflow.pyfunc.PyFuncModel],
) -> None:
    _, model = imdb_model
    base = ["The film is about a family in a small town.", "I watched it on a Sunday."]
    plain = predict(model, base)["prob_positive"].to_numpy()
    praised = predict(model, [t + " It was wonderful." for t in base])["prob_positive"].to_numpy()
    scorned = predict(model, [t + " It was awful." for t in base])["prob_positive"].to_numpy()
    assert (praised > plain).all() and (scorned < plain).all()


def test_predictions_do_not_depend_on_batching_or_order(
    imdb_model: tuple[TrainingResult, mlflow.pyfunc.PyFuncModel],
) -> None:
    _, model = imdb_model
    texts = POSITIVE + NEGATIVE
    together = predict(model, texts)
    one_by_one = pd.concat([predict(model, [t]) for t in texts], ignore_index=True)
    reversed_back = predict(model, texts[::-1]).iloc[::-1].reset_index(drop=True)
    pd.testing.assert_frame_equal(together, one_by_one)
    pd.testing.assert_frame_equal(together, reversed_back)


def test_confident_predictions_are_more_often_right(
    imdb_model: tuple[TrainingResult, mlflow.pyfunc.PyFuncModel], shared_data: Path
) -> None:
    _, model = imdb_model
    test = pd.read_parquet(shared_data / "imdb" / "test.parquet").sample(4000, random_state=3)
    out = predict(model, test["text"].tolist())
    right = out["label"].to_numpy() == test["label"].to_numpy()
    confident = out["confidence"].to_numpy() >= 0.9
    assert right[confident].mean() > right[~confident].mean() + 0.1
    assert right[confident].mean() >= 0.95
