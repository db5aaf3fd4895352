"""The compiled scorer gives the pipeline's own probabilities, for every pipeline shape we train."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import FeatureUnion, Pipeline

from tests.conftest import write_sample
from training import scoring
from training.model import Hyperparameters, build_pipeline, fit_pipeline, probabilities
from training.scoring import CHAR_WORD_MEMO_SIZE, CharNgramIndex, compile_scorer, ngram_index

# Edge cases next to real reviews: nothing known, one known word, markup only, a repeated word.
ODD_TEXTS = ["", "zzqx qqzx", "good", "<br /><br />", "bad bad bad bad bad", "NOT good!!! :("]


def fitted(data: Path, hp: Hyperparameters) -> tuple[Pipeline, list[str]]:
    train = pd.read_parquet(data / "train.parquet")
    test = pd.read_parquet(data / "test.parquet")
    pipeline = build_pipeline(hp, seed=0)
    fit_pipeline(pipeline, train["text"].tolist(), train["label"].tolist(), 0, seed=0)
    return pipeline, test["text"].tolist()[:300] + ODD_TEXTS


def assert_same_probabilities(pipeline: Pipeline, texts: list[str]) -> None:
    score = compile_scorer(pipeline)
    assert score is not None
    expected = probabilities(pipeline, texts)
    for batch in (texts, texts[:1], texts[-3:]):
        np.testing.assert_allclose(score(batch), probabilities(pipeline, batch), atol=1e-6)
    for text in texts[:: max(1, len(texts) // 20)] + texts[-8:]:  # one text has its own path
        np.testing.assert_allclose(score([text]), probabilities(pipeline, [text]), atol=1e-6)
    assert (score(texts).argmax(axis=1) == expected.argmax(axis=1)).all()


def test_imdb_preset_pipeline_scores_through_its_saved_index(imdb_sample: Path) -> None:
    pipeline, texts = fitted(imdb_sample, Hyperparameters(calibration_folds=0))
    index = pipeline.named_steps["features"].ngram_index_
    assert index is not None and len(index.keys) == len(
        pipeline.named_steps["features"].vocabulary_
    )
    assert_same_probabilities(pipeline, texts)


def test_a_version_saved_without_the_index_scores_the_same(imdb_sample: Path) -> None:
    pipeline, texts = fitted(imdb_sample, Hyperparameters(calibration_folds=0))
    del pipeline.named_steps["features"].ngram_index_
    assert_same_probabilities(pipeline, texts)


def test_pipeline_without_nb_or_sublinear_tf(imdb_sample: Path) -> None:
    hp = Hyperparameters(nb_scaling=False, sublinear_tf=False, negation=False, ngram_max=2)
    assert_same_probabilities(*fitted(imdb_sample, hp))


@pytest.fixture(scope="module")
def semeval_pipeline(
    shared_data: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Pipeline, list[str]]:
    data = write_sample(
        shared_data / "semeval2017_task4a",
        tmp_path_factory.mktemp("semeval"),
        {"train": 1200, "test": 300},
    )
    return fitted(data, Hyperparameters(char_ngram_max=4, nb_scaling=False, C=10.0))


def test_three_classes_with_character_ngrams(semeval_pipeline: tuple[Pipeline, list[str]]) -> None:
    pipeline, texts = semeval_pipeline
    assert len(pipeline.classes_) == 3
    assert_same_probabilities(pipeline, texts + CHARACTER_TEXTS)
    # Every word again, now from the memo of each word's character n-grams: the same answers.
    assert_same_probabilities(pipeline, texts + CHARACTER_TEXTS)


def test_a_version_saved_with_a_character_index_scores_the_same(
    semeval_pipeline: tuple[Pipeline, list[str]],
) -> None:
    # Versions registered before character n-grams were counted word by word carry an index.
    pipeline, texts = semeval_pipeline
    char_vectorizer = pipeline.named_steps["features"].transformer_list[1][1]
    empty = np.zeros(0, dtype=np.int64)
    char_vectorizer.ngram_index_ = CharNgramIndex(empty.astype(np.uint32), 2, empty, empty, 4)
    assert_same_probabilities(pipeline, texts + CHARACTER_TEXTS)


def test_character_scores_stay_right_when_the_word_memo_starts_afresh(
    semeval_pipeline: tuple[Pipeline, list[str]],
) -> None:
    pipeline, texts = semeval_pipeline
    score = compile_scorer(pipeline)
    assert score is not None
    many_words = [
        " ".join(f"w{i}x{j}" for j in range(200)) for i in range(CHAR_WORD_MEMO_SIZE // 200 + 2)
    ]
    score(many_words)  # more distinct words than the memo holds: it is emptied on the way
    for batch in (texts[:50], texts[:1], CHARACTER_TEXTS):
        np.testing.assert_allclose(score(batch), probabilities(pipeline, batch), atol=1e-6)


# Where character n-grams differ from words: one-letter words, tabs and runs of spaces, emoji
# outside the Basic Multilingual Plane, accents, characters no training text had, NUL.
CHARACTER_TEXTS = [
    "a b c",
    "good\t\tgood   bad\n",
    "love it 😍😍 👍🏽",
    "café naïve résumé",
    "ᚠᚢᚦ ꙮ \U0001d518\U0001d52b\U0001d526",  # runes, a rare Cyrillic letter, astral letters
    "bad\x00good",
    "lone \ud800 half",
    " ",
    "good" * 20 + " " + "bad" * 30,  # words longer than any precomputed slicing
]


def test_unfolded_nb_ratios_are_applied(imdb_sample: Path) -> None:
    # Versions registered before the ratios were folded into the coefficients keep the NB step.
    train = pd.read_parquet(imdb_sample / "train.parquet")
    pipeline = build_pipeline(Hyperparameters(max_features=3000), seed=0)
    pipeline.fit(train["text"].tolist(), train["label"].tolist())
    assert pipeline.named_steps["nb"] != "passthrough"
    assert_same_probabilities(pipeline, train["text"].tolist()[:100] + ODD_TEXTS)


def test_unknown_pipeline_shapes_are_declined() -> None:
    texts, labels = ["good film", "bad film", "great", "awful"], ["p", "n", "p", "n"]
    l1 = Pipeline(
        [
            ("features", TfidfVectorizer(norm="l1")),
            ("nb", "passthrough"),
            ("clf", LogisticRegression()),
        ]
    ).fit(texts, labels)
    other = Pipeline([("tfidf", TfidfVectorizer()), ("lr", LogisticRegression())]).fit(
        texts, labels
    )
    assert compile_scorer(l1) is None
    assert compile_scorer(other) is None


def test_ngram_keys_are_unique_per_ngram() -> None:
    vocabulary = {"a": 0, "b": 1, "a b": 2, "b a": 3, "a b a": 4}
    index = ngram_index(vocabulary)
    assert index is not None
    assert len(set(index.keys.tolist())) == 5
    assert sorted(index.columns.tolist()) == [0, 1, 2, 3, 4]


class _DoubledTfidf(TfidfVectorizer):
    """Doubles its features at prediction time: a TfidfVectorizer to every structural check of
    the scorer, which would therefore score it wrong."""

    def transform(self, raw_documents: Any) -> Any:
        return super().transform(raw_documents) * 2.0


def test_a_scorer_is_only_given_when_it_agrees_with_the_pipeline(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    texts = ["good film, great cast", "bad film, awful plot", "great, good", "awful, bad plot"]
    labels = ["p", "n", "p", "n"]

    def fit(vectorizer: TfidfVectorizer) -> Pipeline:
        steps = [("features", vectorizer), ("nb", "passthrough"), ("clf", LogisticRegression())]
        return Pipeline(steps).fit(texts, labels)

    # Tokens with spaces inside: no n-gram index, but the slower counter gets them right.
    odd = fit(TfidfVectorizer(token_pattern=r"[^,]+", ngram_range=(1, 2)))
    score = compile_scorer(odd)
    assert score is not None
    np.testing.assert_allclose(score(texts), probabilities(odd, texts), atol=1e-6)

    doubled = fit(_DoubledTfidf())
    assert compile_scorer(doubled) is None
    # What the check declined: without it the scorer would answer, wrongly.
    monkeypatch.setattr(scoring, "_agrees", lambda score, pipeline: True)
    wrong = compile_scorer(doubled)
    assert wrong is not None
    assert not np.allclose(wrong(texts), probabilities(doubled, texts), atol=1e-6)


def test_an_empty_batch_scores_to_no_rows(imdb_sample: Path) -> None:
    pipeline, _ = fitted(imdb_sample, Hyperparameters(calibration_folds=0, max_features=2000))
    score = compile_scorer(pipeline)
    assert score is not None
    assert score([]).shape == (0, 2)


def test_character_ngrams_longer_than_short_words() -> None:
    # char_wb with sizes above a padded short word's length: scikit-learn takes such a word
    # whole, once; the word-by-word counter must too.
    texts = ["a good film", "an awful one", "I liked it a lot", "it is bad", "ok", "no"]
    labels = ["p", "n", "p", "n", "p", "n"]
    pipeline = Pipeline(
        [
            ("features", TfidfVectorizer(analyzer="char_wb", ngram_range=(4, 6))),
            ("nb", "passthrough"),
            ("clf", LogisticRegression()),
        ]
    ).fit(texts, labels)
    assert_same_probabilities(pipeline, [*texts, "a", "I o", "good bad ok", *CHARACTER_TEXTS])


def test_a_union_of_differently_weighted_vectorizers(imdb_sample: Path) -> None:
    # Each part keeps its own tf, idf and norm settings in the one shared weighing pass.
    train = pd.read_parquet(imdb_sample / "train.parquet").head(400)
    features = FeatureUnion(
        [
            ("word", TfidfVectorizer(binary=True, norm=None, use_idf=False, max_features=3000)),
            ("char", TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 3), sublinear_tf=True)),
            ("pairs", TfidfVectorizer(ngram_range=(2, 2), max_features=2000)),
        ]
    )
    pipeline = Pipeline(
        [("features", features), ("nb", "passthrough"), ("clf", LogisticRegression(max_iter=500))]
    ).fit(train["text"].tolist(), train["label"].tolist())
    assert_same_probabilities(pipeline, train["text"].tolist()[:100] + ODD_TEXTS + CHARACTER_TEXTS)
