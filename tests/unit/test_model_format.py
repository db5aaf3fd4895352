"""The model format gives the reference pipeline's own probabilities, for every pipeline shape we
train, read back from plain files; and its pyfunc model answers what pyfunc clients send."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import FeatureUnion, Pipeline

from emotitrack.core import model_format
from emotitrack.core.descriptors import TextDescriber
from emotitrack.core.model_format import (
    CHAR_WORD_MEMO_SIZE,
    SentimentScorer,
    decode_strings,
    encode_strings,
    texts_from_input,
)
from tests.conftest import write_sample
from training.export import ExportError, check_parity, to_format
from training.model import Hyperparameters, build_pipeline, fit_pipeline, probabilities

# Edge cases next to real reviews: nothing known, one known word, markup only, a repeated word.
ODD_TEXTS = ["", "zzqx qqzx", "good", "<br /><br />", "bad bad bad bad bad", "NOT good!!! :("]
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


def fitted(data: Path, hp: Hyperparameters) -> tuple[Pipeline, list[str]]:
    train = pd.read_parquet(data / "train.parquet")
    test = pd.read_parquet(data / "test.parquet")
    pipeline = build_pipeline(hp, seed=0)
    fit_pipeline(pipeline, train["text"].tolist(), train["label"].tolist(), 0, seed=0)
    return pipeline, test["text"].tolist()[:300] + ODD_TEXTS


def read_back(pipeline: Pipeline, directory: Path) -> SentimentScorer:
    """Export, write the two files, and read them as serving does."""
    exported = to_format(pipeline)
    return model_format.read(
        model_format.write(directory, exported.config, exported.arrays).config.parent
    )


def assert_same_probabilities(
    scorer: SentimentScorer, pipeline: Pipeline, texts: list[str]
) -> None:
    expected = probabilities(pipeline, texts)
    for batch in (texts, texts[:1], texts[-3:]):
        np.testing.assert_allclose(
            scorer.probabilities(batch), probabilities(pipeline, batch), atol=1e-6
        )
    for text in texts[:: max(1, len(texts) // 20)] + texts[-8:]:  # one text has its own path
        np.testing.assert_allclose(
            scorer.probabilities([text]), probabilities(pipeline, [text]), atol=1e-6
        )
    got = scorer.probabilities(texts)
    assert got.dtype == np.float64 and got.shape == (len(texts), len(pipeline.classes_))
    np.testing.assert_allclose(got.sum(axis=1), 1.0, atol=1e-12)
    assert (got.argmax(axis=1) == expected.argmax(axis=1)).all()


def test_imdb_preset_reads_back_from_plain_files(imdb_sample: Path, tmp_path: Path) -> None:
    pipeline, texts = fitted(imdb_sample, Hyperparameters(calibration_folds=0))
    scorer = read_back(pipeline, tmp_path)
    assert scorer.classes == ["negative", "positive"]
    assert_same_probabilities(scorer, pipeline, texts)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["format"] == "emotitrack-sentiment" and config["format_version"] == 1
    assert [part["normalizer"] for part in config["parts"]] == ["negation-v1"]
    with np.load(tmp_path / "arrays.npz", allow_pickle=False) as arrays:
        assert {"coef", "intercept", "idf", "vocabulary_0", "tokens_0", "keys_0"} <= set(arrays)
        assert all(arrays[name].dtype != object for name in arrays.files)


def test_calibrated_pipeline_without_nb_or_sublinear_tf(imdb_sample: Path, tmp_path: Path) -> None:
    train = pd.read_parquet(imdb_sample / "train.parquet")
    hp = Hyperparameters(nb_scaling=False, sublinear_tf=False, negation=False, ngram_max=2)
    pipeline = build_pipeline(hp, seed=0)
    fit_pipeline(pipeline, train["text"].tolist(), train["label"].tolist(), 3, seed=0)
    texts = pd.read_parquet(imdb_sample / "test.parquet")["text"].tolist()[:200] + ODD_TEXTS
    assert_same_probabilities(read_back(pipeline, tmp_path), pipeline, texts)


def test_words_and_characters_with_nb_scaling(imdb_sample: Path, tmp_path: Path) -> None:
    hp = Hyperparameters(char_ngram_max=4, max_features=20_000, calibration_folds=0)
    pipeline, texts = fitted(imdb_sample, hp)
    assert_same_probabilities(read_back(pipeline, tmp_path), pipeline, texts + CHARACTER_TEXTS)


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


def test_three_classes_with_character_ngrams(
    semeval_pipeline: tuple[Pipeline, list[str]], tmp_path: Path
) -> None:
    pipeline, texts = semeval_pipeline
    assert len(pipeline.classes_) == 3
    scorer = read_back(pipeline, tmp_path)
    assert_same_probabilities(scorer, pipeline, texts + CHARACTER_TEXTS)
    # Every word again, now from the memo of each word's character n-grams: the same answers.
    assert_same_probabilities(scorer, pipeline, texts + CHARACTER_TEXTS)


def test_character_scores_stay_right_when_the_word_memo_starts_afresh(
    semeval_pipeline: tuple[Pipeline, list[str]],
) -> None:
    pipeline, texts = semeval_pipeline
    scorer = to_format(pipeline).scorer
    many_words = [
        " ".join(f"w{i}x{j}" for j in range(200)) for i in range(CHAR_WORD_MEMO_SIZE // 200 + 2)
    ]
    scorer.probabilities(many_words)  # more distinct words than the memo holds: it is emptied
    for batch in (texts[:50], texts[:1], CHARACTER_TEXTS):
        np.testing.assert_allclose(
            scorer.probabilities(batch), probabilities(pipeline, batch), atol=1e-6
        )


def test_lone_surrogates_from_escaped_emoji_survive_the_files(tmp_path: Path) -> None:
    # Tweets carry emoji as literal "\ud83d\ude00" escapes: normalisation makes them two lone
    # surrogates, which the vocabulary then holds and UTF-8 cannot encode without help.
    texts = ["love it \\ud83d\\ude0d", "hate it \\ud83d\\ude21", "so good \\ud83d\\ude0d", "awful"]
    pipeline = build_pipeline(Hyperparameters(min_df=1, nb_scaling=False, char_ngram_max=3), 0)
    fit_pipeline(pipeline, texts, ["p", "n", "p", "n"], 0, seed=0)
    characters = pipeline.named_steps["features"].transformer_list[1][1].vocabulary_
    assert any("\ud83d" in gram for gram in characters)
    assert_same_probabilities(read_back(pipeline, tmp_path), pipeline, [*texts, "\\ud83d x"])


def test_unfolded_nb_ratios_are_folded_in(imdb_sample: Path) -> None:
    # Versions registered before the ratios were folded into the coefficients keep the NB step.
    train = pd.read_parquet(imdb_sample / "train.parquet")
    pipeline = build_pipeline(Hyperparameters(max_features=3000), seed=0)
    pipeline.fit(train["text"].tolist(), train["label"].tolist())
    assert pipeline.named_steps["nb"] != "passthrough"
    texts = train["text"].tolist()[:100] + ODD_TEXTS
    assert_same_probabilities(to_format(pipeline).scorer, pipeline, texts)


def test_ngram_keys_too_large_for_int64_are_looked_up_as_strings(imdb_sample: Path) -> None:
    reviews = pd.read_parquet(imdb_sample / "train.parquet").head(200)
    hp = Hyperparameters(ngram_max=5, min_df=1, max_df=1.0, calibration_folds=0)
    pipeline = build_pipeline(hp, seed=0)
    fit_pipeline(pipeline, reviews["text"].tolist(), reviews["label"].tolist(), 0, seed=0)
    exported = to_format(pipeline)
    assert "keys_0" not in exported.arrays  # 5-grams of thousands of tokens overflow
    held_out = pd.read_parquet(imdb_sample / "test.parquet")["text"].tolist()[:100]
    texts = [*held_out, *ODD_TEXTS, "a b c d e f g h i j"]
    assert_same_probabilities(exported.scorer, pipeline, texts)


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
    texts = train["text"].tolist()[:100] + ODD_TEXTS + CHARACTER_TEXTS
    assert_same_probabilities(to_format(pipeline).scorer, pipeline, texts)


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
    scorer = to_format(pipeline).scorer
    assert_same_probabilities(
        scorer, pipeline, [*texts, "a", "I o", "good bad ok", *CHARACTER_TEXTS]
    )


def test_an_empty_batch_scores_to_no_rows(imdb_sample: Path) -> None:
    pipeline, _ = fitted(imdb_sample, Hyperparameters(calibration_folds=0, max_features=2000))
    scorer = to_format(pipeline).scorer
    assert scorer.probabilities([]).shape == (0, 2)
    assert scorer.explain([]) == []


class _DoubledTfidf(TfidfVectorizer):
    """Doubles its features at prediction time: a TfidfVectorizer to every structural check of
    the export, which would therefore score it wrong."""

    def transform(self, raw_documents: Any) -> Any:
        return super().transform(raw_documents) * 2.0


def _small(vectorizer: Any, steps: tuple[str, str, str] = ("features", "nb", "clf")) -> Pipeline:
    texts = ["good film, great cast", "bad film, awful plot", "great, good", "awful, bad plot"]
    return Pipeline(
        list(zip(steps, [vectorizer, "passthrough", LogisticRegression()], strict=True))
    ).fit(texts, ["p", "n", "p", "n"])


@pytest.mark.parametrize(
    ("pipeline", "refusal"),
    [
        (lambda: _small(TfidfVectorizer(norm="l1")), "norm 'l1'"),
        (lambda: _small(TfidfVectorizer(), ("tfidf", "nb", "lr")), "expected features, nb"),
        (lambda: _small(TfidfVectorizer(analyzer="char")), "analyzer 'char'"),
        (lambda: _small(TfidfVectorizer(stop_words=["a"])), "stop words"),
        (lambda: _small(TfidfVectorizer(strip_accents="ascii")), "strip_accents"),
        (lambda: _small(TfidfVectorizer(preprocessor=str.upper)), "unknown preprocessor"),
        (lambda: _small(TfidfVectorizer(token_pattern=r"[^,]+")), "tokens hold spaces"),
        # What no structural check sees is caught by the parity check.
        (lambda: _small(_DoubledTfidf()), "probabilities differ"),
    ],
)
def test_pipelines_the_format_does_not_reproduce_are_refused(pipeline: Any, refusal: str) -> None:
    with pytest.raises(ExportError, match=refusal):
        to_format(pipeline())


def test_the_parity_check_can_fail(imdb_sample: Path) -> None:
    pipeline, texts = fitted(imdb_sample, Hyperparameters(calibration_folds=0, max_features=2000))
    exported = to_format(pipeline)
    exported.arrays["coef"] = exported.arrays["coef"] * 1.001
    with pytest.raises(ExportError, match="differ"):
        check_parity(SentimentScorer(exported.config, exported.arrays), pipeline, texts[:20])


def test_a_newer_format_is_refused_with_what_to_do(imdb_sample: Path, tmp_path: Path) -> None:
    pipeline, _ = fitted(imdb_sample, Hyperparameters(calibration_folds=0, max_features=2000))
    exported = to_format(pipeline)
    files = model_format.write(tmp_path, exported.config, exported.arrays)
    config = json.loads(files.config.read_text())
    files.config.write_text(json.dumps({**config, "format_version": 2}))
    with pytest.raises(ValueError, match=r"format version 2.*upgrade emotitrack"):
        model_format.read(tmp_path)
    with pytest.raises(ValueError, match="pickle"):
        model_format.write(tmp_path, exported.config, {"x": np.array([object()])})


def test_strings_round_trip_through_one_blob() -> None:
    strings = ["a", "", "not neg_good", "😍", "\ud83d", " go", "é"]
    assert decode_strings(encode_strings(strings), len(strings)) == strings
    with pytest.raises(ValueError, match="newline"):
        encode_strings(["a\nb"])


@pytest.fixture(scope="module")
def sample(imdb_sample: Path) -> tuple[list[str], list[str]]:
    train = pd.read_parquet(imdb_sample / "train.parquet")
    return train["text"].tolist(), train["label"].tolist()


@pytest.fixture(scope="module")
def calibrated(sample: tuple[list[str], list[str]]) -> tuple[Pipeline, SentimentScorer]:
    texts, labels = sample
    pipeline = build_pipeline(Hyperparameters(max_features=5000), seed=0)
    fit_pipeline(pipeline, texts, labels, calibration_folds=3, seed=0)
    return pipeline, to_format(pipeline).scorer


def test_explanation_contributions_add_up_to_the_logit(
    calibrated: tuple[Pipeline, SentimentScorer],
) -> None:
    pipeline, scorer = calibrated
    text = "A wonderful, moving film with a dull start."
    [explanation] = scorer.explain([text], top=10_000)
    towards_positive = sum(item["contribution"] for item in explanation["positive"])
    towards_negative = sum(item["contribution"] for item in explanation["negative"])
    intercept = float(pipeline.named_steps["clf"].intercept_[0])
    logit = float(pipeline.decision_function([text])[0])
    assert towards_positive - towards_negative + intercept == pytest.approx(logit, abs=1e-3)
    # every n-gram named is one scikit-learn's analyzer finds in the text
    analyzed = set(pipeline.named_steps["features"].build_analyzer()(text))
    assert {item["ngram"] for items in explanation.values() for item in items} <= analyzed
    top = scorer.explain([text, "Dull."], top=3)
    assert "wonderful" in [item["ngram"] for item in top[0]["positive"]]
    assert len(top[0]["positive"]) == 3 and top[1]["negative"][0]["ngram"] == "dull"


def test_character_ngrams_are_explained_quoted(
    semeval_pipeline: tuple[Pipeline, list[str]],
) -> None:
    pipeline, _ = semeval_pipeline
    [explanation] = to_format(pipeline).scorer.explain(["so happy today :)"], top=50)
    names = [item["ngram"] for items in explanation.values() for item in items]
    assert "'hap'" in names and "happy" in names


def test_descriptors_from_the_format_match_the_pipelines(
    calibrated: tuple[Pipeline, SentimentScorer], sample: tuple[list[str], list[str]]
) -> None:
    pipeline, scorer = calibrated
    texts = [*sample[0][:50], "zzqx blorf", "", "NOT good!!! :("]
    from_format = TextDescriber.for_model(scorer).describe(texts)
    pd.testing.assert_frame_equal(from_format, TextDescriber.for_pipeline(pipeline).describe(texts))
    assert from_format["oov_share"].iloc[-3] == 1.0
    assert TextDescriber.for_model(None).vocabulary is None


@pytest.mark.parametrize(
    "given",
    [
        pd.DataFrame({"text": ["a", "b"]}),
        pd.DataFrame({"review": ["a", "b"]}),
        pd.Series(["a", "b"]),
        np.array(["a", "b"]),
        ["a", "b"],
    ],
)
def test_every_pyfunc_input_shape_yields_one_text_per_row(given: object) -> None:
    # The pitfall this guards: a DataFrame iterated as column names gives one "text" for N rows.
    assert texts_from_input(given) == ["a", "b"]


def test_ambiguous_frame_is_refused() -> None:
    with pytest.raises(ValueError, match=r"expected a 'text' column, got columns \['a', 'b'\]"):
        texts_from_input(pd.DataFrame({"a": ["x"], "b": ["y"]}))


def test_pyfunc_answers_a_row_per_text_and_explains_only_when_asked(
    calibrated: tuple[Pipeline, SentimentScorer], tmp_path: Path
) -> None:
    pipeline, _ = calibrated
    exported = to_format(pipeline)
    files = model_format.write(tmp_path, exported.config, exported.arrays)
    model = model_format.python_model()
    model.load_context(SimpleNamespace(artifacts={"config": files.config, "arrays": files.arrays}))
    texts = ["A great film.", "Awful.", "It was a movie."]
    table = model.predict(None, pd.DataFrame({"text": texts}))
    assert list(table.columns) == ["label", "confidence", "prob_negative", "prob_positive"]
    np.testing.assert_allclose(
        table[["prob_negative", "prob_positive"]], probabilities(pipeline, texts), atol=1e-6
    )
    assert list(table["label"][:2]) == ["positive", "negative"]
    np.testing.assert_allclose(table["confidence"], table.iloc[:, 2:].max(axis=1))
    assert len(model.predict(None, "Awful.")) == 1
    explained = model.predict(None, pd.DataFrame({"text": texts[:2]}), params={"explain": True})
    first = json.loads(explained["explanation"][0])
    assert set(first) == {"negative", "positive"}
    assert first["positive"][0]["ngram"] == "great"


def test_the_format_module_imports_only_the_standard_library_and_numpy() -> None:
    # It is copied into every model and must not need the project, pandas or MLflow to import.
    probe = (
        "import sys; import emotitrack.core.model_format; "
        "print(sorted({m.split('.')[0] for m in sys.modules}))"
    )
    loaded = json.loads(
        subprocess.run(
            [sys.executable, "-c", probe], capture_output=True, text=True, check=True
        ).stdout.replace("'", '"')
    )
    assert not {"pandas", "mlflow", "sklearn", "scipy", "training", "serving", "monitoring"} & set(
        loaded
    )
    source = Path(model_format.__file__).read_text()
    assert "from emotitrack" not in source and "import emotitrack" not in source
