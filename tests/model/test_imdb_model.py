"""Behaviour of the default model trained on all of IMDB, loaded back from the registry."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import mlflow
import pandas as pd
import pytest

from training.model import Hyperparameters
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
        result = train(settings, Hyperparameters())  # the defaults users get
        yield result, mlflow.pyfunc.load_model(result.model_uri)


def predict(model: mlflow.pyfunc.PyFuncModel, texts: list[str]) -> pd.DataFrame:
    return model.predict(pd.DataFrame({"text": texts}))


def test_default_parameters_reach_the_accuracy_floor(
    imdb_model: tuple[TrainingResult, object],
) -> None:
    result, _ = imdb_model
    logged = mlflow.MlflowClient().get_run(result.run_id).data.metrics
    assert logged["data_test_rows"] == 25_000  # the whole official test split
    assert result.metrics["test_accuracy"] >= 0.89
    assert result.metrics["model_size_bytes"] < 50e6


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
