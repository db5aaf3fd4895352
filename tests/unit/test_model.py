"""The reference pipeline (fitting, calibration, NB folding), on a small real sample."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.pipeline import Pipeline

from training.hyperparameters import Hyperparameters, describe_model
from training.model import (
    build_pipeline,
    fit_pipeline,
    prediction_table,
    probabilities,
    strongest_ngrams,
)


@pytest.fixture(scope="module")
def fitted(imdb_sample: Path) -> Pipeline:
    train = pd.read_parquet(imdb_sample / "train.parquet")
    pipeline = build_pipeline(Hyperparameters(max_features=5000), seed=0)
    return pipeline.fit(train["text"].tolist(), train["label"].tolist())


def test_one_row_per_text_with_normalised_probabilities(fitted: Pipeline) -> None:
    texts = ["A wonderful, moving film.", "Dull and far too long.", "It was a movie."]
    table = prediction_table(fitted, texts)
    assert list(table.columns) == ["label", "confidence", "prob_negative", "prob_positive"]
    assert len(table) == 3
    probs = table[["prob_negative", "prob_positive"]].to_numpy()
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-12)
    np.testing.assert_allclose(table["confidence"], probs.max(axis=1))
    assert list(table["label"][:2]) == ["positive", "negative"]


@pytest.fixture(scope="module")
def sample(imdb_sample: Path) -> tuple[list[str], list[str]]:
    train = pd.read_parquet(imdb_sample / "train.parquet")
    return train["text"].tolist(), train["label"].tolist()


def test_folding_nb_ratios_into_the_classifier_keeps_its_probabilities(
    sample: tuple[list[str], list[str]],
) -> None:
    texts, labels = sample
    hp = Hyperparameters(max_features=5000, calibration_folds=0)
    plain = build_pipeline(hp, seed=0).fit(texts, labels)
    folded = build_pipeline(hp, seed=0)
    assert fit_pipeline(folded, texts, labels, calibration_folds=0, seed=0) == 1.0
    assert folded.named_steps["nb"] == "passthrough"
    unseen = ["A wonderful film.", "Dull and far too long.", "It was a movie."]
    np.testing.assert_allclose(
        probabilities(folded, unseen), probabilities(plain, unseen), rtol=1e-4
    )


def test_calibration_fits_a_temperature_and_keeps_every_decision(
    sample: tuple[list[str], list[str]],
) -> None:
    texts, labels = sample
    hp = Hyperparameters(max_features=5000)
    uncalibrated = build_pipeline(hp, seed=0)
    fit_pipeline(uncalibrated, texts, labels, calibration_folds=0, seed=0)
    calibrated = build_pipeline(hp, seed=0)
    temperature = fit_pipeline(calibrated, texts, labels, calibration_folds=3, seed=0)
    assert temperature != pytest.approx(1.0, abs=0.02)
    unseen = texts[:200]
    assert (calibrated.predict(unseen) == uncalibrated.predict(unseen)).all()
    logit = np.log(
        probabilities(uncalibrated, unseen)[:, 1] / probabilities(uncalibrated, unseen)[:, 0]
    )
    scaled = np.log(
        probabilities(calibrated, unseen)[:, 1] / probabilities(calibrated, unseen)[:, 0]
    )
    np.testing.assert_allclose(scaled, logit / temperature, rtol=1e-3, atol=1e-4)


def test_calibrating_on_a_held_out_set_minimises_its_log_loss(
    sample: tuple[list[str], list[str]],
) -> None:
    from sklearn.metrics import log_loss

    texts, labels = sample
    train_texts, train_labels = texts[:1000], labels[:1000]
    held_out = (texts[1000:], labels[1000:])
    hp = Hyperparameters(max_features=5000)
    pipeline = build_pipeline(hp, seed=0)
    temperature = fit_pipeline(
        pipeline, train_texts, train_labels, calibration_folds=3, seed=0, calibration_set=held_out
    )
    base = probabilities(pipeline, held_out[0])
    logit = np.log(base[:, 1] / base[:, 0])

    def loss_at(scale: float) -> float:
        positive = 1 / (1 + np.exp(-logit * scale))
        return float(log_loss(held_out[1], np.stack([1 - positive, positive], axis=1)))

    # The fitted temperature is the held-out optimum: rescaling either way only loses.
    assert loss_at(1.0) < min(loss_at(0.8), loss_at(1.25))
    assert temperature != pytest.approx(1.0, abs=0.02)


def test_strongest_ngrams_are_sentiment_words(sample: tuple[list[str], list[str]]) -> None:
    texts, labels = sample
    pipeline = build_pipeline(Hyperparameters(max_features=5000), seed=0)
    fit_pipeline(pipeline, texts, labels, calibration_folds=0, seed=0)
    table = strongest_ngrams(pipeline, top=20)
    assert set(table["class"]) == {"negative", "positive"}
    assert {"worst", "bad", "awful", "waste", "boring"} & set(
        table.query("`class` == 'negative'")["ngram"]
    )
    assert {"great", "excellent", "best", "wonderful"} & set(
        table.query("`class` == 'positive'")["ngram"]
    )


def test_calibration_folds_0_fits_no_temperature_even_given_a_calibration_set(
    sample: tuple[list[str], list[str]],
) -> None:
    texts, labels = sample
    hp = Hyperparameters(max_features=5000, calibration_folds=0, calibrate_on="validation")
    uncalibrated = build_pipeline(hp, seed=0)
    held_out = (texts[:300], labels[:300])
    temperature = fit_pipeline(
        uncalibrated, texts[300:], labels[300:], 0, seed=0, calibration_set=held_out
    )
    assert temperature == 1.0
    plain = build_pipeline(hp, seed=0)
    fit_pipeline(plain, texts[300:], labels[300:], 0, seed=0)
    np.testing.assert_allclose(
        probabilities(uncalibrated, texts[:50]), probabilities(plain, texts[:50])
    )


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"C": 0.0}, "C must be above 0"),
        ({"C": -1.0}, "C must be above 0"),
        ({"C": float("nan")}, "C must be above 0"),
        ({"max_iter": 0}, "max_iter must be at least 1"),
        ({"min_df": 0}, "min_df must be at least 1"),
        ({"max_df": 0.0}, "max_df must be above 0 and at most 1"),
        ({"max_df": 1.5}, "max_df must be above 0 and at most 1"),
        ({"max_features": -1}, "max_features must be 0"),
    ],
)
def test_impossible_hyperparameters_are_refused_when_made(
    changes: dict[str, object], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        Hyperparameters().updated(**changes)


@pytest.mark.parametrize(
    ("hp", "description"),
    [
        (Hyperparameters(), "TF-IDF (words 1-3) + NB-scaled, calibrated LogisticRegression"),
        (
            Hyperparameters(
                ngram_max=2, char_ngram_max=5, nb_scaling=False, class_weight="balanced"
            ),
            "TF-IDF (words 1-2, characters 2-5) + class-balanced, calibrated LogisticRegression",
        ),
        (
            Hyperparameters(nb_scaling=False, calibration_folds=0, calibrate_on="validation"),
            "TF-IDF (words 1-3) + LogisticRegression",
        ),
    ],
)
def test_a_model_is_described_by_its_hyperparameters(hp: Hyperparameters, description: str) -> None:
    assert describe_model(hp) == description
