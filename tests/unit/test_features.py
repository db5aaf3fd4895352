"""Text normalisation, the lean vectorizer, NB scaling and temperature calibration."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.special import expit
from sklearn.feature_extraction.text import TfidfVectorizer

from emotitrack.core import model_format
from training.features import (
    WORD_PATTERN,
    LeanTfidfVectorizer,
    NBLogCountRatio,
    normalize_text,
    normalize_with_negation,
)
from training.model import fit_temperature


@pytest.mark.parametrize(
    ("raw", "normalised"),
    [
        ("Great film.<br /><br />Loved it", "great film.  loved it"),
        ("Can\\u2019t wait &amp; see", "can't wait & see"),
        ("see https://t.co/xyz now", "see  url  now"),
        ("SEE HTTPS://EXAMPLE.COM/X NOW", "see  url  now"),
        ("at Www.Example.com", "at  url "),
        ("@bob_99 thanks", " @user  thanks"),
        ("Sooooo goooood!!!", "soo good!!!"),
        # Only word characters are shortened: digits and underscores are, dots and "!" are not.
        ("wait... 1000 __x___ ééé \u0661\u0661\u0661 !", "wait... 100 __x__ éé \u0661\u0661 !"),
        ("lone \ud800\ud800\ud800 halves", "lone \ud800\ud800\ud800 halves"),
        ("aa", "aa"),
    ],
)
def test_normalisation_makes_markup_escapes_urls_and_elongations_uniform(
    raw: str, normalised: str
) -> None:
    assert normalize_text(raw) == normalised


def test_skipping_the_elongation_regex_changes_no_text(
    texts: pd.DataFrame, monkeypatch: pytest.MonkeyPatch
) -> None:
    # normalize_text runs the regex only where a word character repeats: features must not change.
    # Reviews take the long-text test, their first sentences and the odd ones the short-text one.
    odd = ["Sooo goood", "x___", "\u0661" * 4, "ok!!!", "....", "e\u0301\u0301\u0301", "a\n\n\nb"]
    reviews = texts["text"].tolist()[:500]
    raw = [*reviews, *(review[:120] for review in reviews), *odd]
    fast = [normalize_text(t) for t in raw]
    monkeypatch.setattr(model_format, "_has_word_character_run", lambda text: True)
    assert [normalize_text(t) for t in raw] == fast


def test_negation_marks_words_up_to_the_next_punctuation() -> None:
    marked = normalize_with_negation("It was not good at all, but never boring.")
    assert marked == "it was not neg_good neg_at neg_all, but never neg_boring."


@pytest.fixture(scope="module")
def texts(imdb_sample: Path) -> pd.DataFrame:
    return pd.read_parquet(imdb_sample / "train.parquet")


@pytest.mark.parametrize(
    "options",
    [
        {"ngram_range": (1, 3), "sublinear_tf": True, "token_pattern": WORD_PATTERN},
        {"ngram_range": (1, 2), "binary": True, "min_df": 2},
        {"analyzer": "char_wb", "ngram_range": (2, 5), "sublinear_tf": True},
        {"ngram_range": (1, 1), "use_idf": False, "norm": None},
    ],
)
def test_lean_vectorizer_gives_scikit_learns_matrix(
    texts: pd.DataFrame, options: dict[str, object]
) -> None:
    train = texts["text"].tolist()[:800]
    unseen = [*texts["text"].tolist()[800:900], "", "zzz qqq never seen", "ok"]
    ours = LeanTfidfVectorizer(preprocessor=normalize_text, dtype=np.float32, **options).fit(train)
    reference = TfidfVectorizer(preprocessor=normalize_text, dtype=np.float32, **options).fit(train)
    np.testing.assert_allclose(
        ours.transform(unseen).toarray(), reference.transform(unseen).toarray(), rtol=1e-6
    )


def test_nb_ratio_points_features_to_the_class_they_occur_in() -> None:
    counts = np.array([[1, 0, 1], [1, 0, 1], [0, 1, 1], [0, 1, 1]], dtype=float)
    labels = ["positive", "positive", "negative", "negative"]
    ratio = NBLogCountRatio().fit(counts, labels).ratio_
    assert ratio[0] > 0 > ratio[1]
    assert ratio[2] == pytest.approx(0.0)
    scaled = NBLogCountRatio().fit(counts, labels).transform(counts).toarray()
    np.testing.assert_allclose(scaled, counts * ratio)


def test_nb_scaling_refuses_three_classes_with_what_to_do() -> None:
    with pytest.raises(ValueError, match=r"exactly two classes.*--nb-scaling false"):
        NBLogCountRatio().fit(np.eye(3), ["a", "b", "c"])


@pytest.mark.parametrize("true_temperature", [0.5, 2.0])
def test_temperature_fit_recovers_the_temperature_that_generated_the_labels(
    true_temperature: float,
) -> None:
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 4, size=20_000)
    labels = np.where(rng.random(20_000) < expit(logits / true_temperature), "pos", "neg")
    fitted = fit_temperature(logits, list(labels), ["neg", "pos"])
    assert fitted == pytest.approx(true_temperature, rel=0.08)
