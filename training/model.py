"""The sentiment model: one scikit-learn pipeline (TF-IDF features, Naive-Bayes scaling, a
temperature-calibrated LogisticRegression) and its MLflow pyfunc wrapper.

The wrapper exists because a bare scikit-learn text pipeline behind pyfunc is silently wrong:
pyfunc hands it a DataFrame, the vectorizer iterates the column *names*, and N rows get one
prediction. The wrapper takes the ``text`` column explicitly and returns, per row, the label, its
probability (``confidence``) and one ``prob_<label>`` column per class.
"""

from __future__ import annotations

import json
import pickle
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, cast

import joblib
import numpy as np
import pandas as pd
import scipy.sparse as sp
from mlflow.pyfunc import PythonModel
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax
from sklearn.base import clone
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.pipeline import FeatureUnion, Pipeline

from training.features import (
    WORD_PATTERN,
    LeanTfidfVectorizer,
    NBLogCountRatio,
    normalize_text,
    normalize_with_negation,
)
from training.scoring import attach_ngram_indexes

PIPELINE_ARTIFACT = "pipeline"
PROBABILITY_PREFIX = "prob_"
CLASS_WEIGHTS = ("none", "balanced")
CALIBRATION_SETS = ("folds", "validation")


@dataclass(frozen=True)
class Hyperparameters:
    """Pipeline knobs, exposed as MLproject parameters and ``emotitrack train`` options.

    Defaults are the IMDB preset (see ``training.presets``), chosen by cross-validation on the
    IMDB training data, never on test."""

    ngram_max: int = 3
    char_ngram_max: int = 0
    max_features: int = 0
    min_df: int = 2
    max_df: float = 0.95
    sublinear_tf: bool = True
    negation: bool = True
    nb_scaling: bool = True
    C: float = 100.0
    class_weight: str = "none"
    calibration_folds: int = 3
    calibrate_on: str = "folds"
    max_iter: int = 2000

    def __post_init__(self) -> None:
        if self.class_weight not in CLASS_WEIGHTS:
            raise ValueError(
                f"class_weight must be one of {CLASS_WEIGHTS}, got {self.class_weight!r}"
            )
        if self.ngram_max < 1 or self.char_ngram_max not in (0, *range(2, 10)):
            raise ValueError("ngram_max must be >= 1 and char_ngram_max 0 (off) or 2-9")
        # Checked here, not by scikit-learn mid-fit: a bad value then costs a failed MLflow run.
        if self.max_features < 0:
            raise ValueError(f"max_features must be 0 (no limit) or more, got {self.max_features}")
        if self.min_df < 1:
            raise ValueError(f"min_df must be at least 1, got {self.min_df}")
        if not 0 < self.max_df <= 1:
            raise ValueError(f"max_df must be above 0 and at most 1, got {self.max_df}")
        if not self.C > 0:  # also refuses NaN
            raise ValueError(f"C must be above 0, got {self.C}")
        if self.max_iter < 1:
            raise ValueError(f"max_iter must be at least 1, got {self.max_iter}")
        if self.calibration_folds == 1 or self.calibration_folds < 0:
            raise ValueError("calibration_folds must be 0 (off) or at least 2")
        if self.calibrate_on not in CALIBRATION_SETS:
            raise ValueError(
                f"calibrate_on must be one of {CALIBRATION_SETS}, got {self.calibrate_on!r}"
            )

    def as_params(self) -> dict[str, Any]:
        return asdict(self)

    def updated(self, **changes: Any) -> Hyperparameters:
        return replace(self, **changes)


def describe_model(hp: Hyperparameters) -> str:
    """The model ``hp`` builds, in words: ``TF-IDF (words 1-3) + NB-scaled, calibrated
    LogisticRegression``; a registered version's description says what that version is."""
    features = f"words 1-{hp.ngram_max}"
    if hp.char_ngram_max:
        features += f", characters 2-{hp.char_ngram_max}"
    traits = [
        trait
        for trait, present in (
            ("NB-scaled", hp.nb_scaling),
            ("class-balanced", hp.class_weight == "balanced"),
            ("calibrated", hp.calibration_folds > 0),  # 0 is off whatever calibrate_on says
        )
        if present
    ]
    head = " ".join(filter(None, [", ".join(traits), "LogisticRegression"]))
    return f"TF-IDF ({features}) + {head}"


def build_pipeline(hp: Hyperparameters, seed: int) -> Pipeline:
    """Word (and optionally character) TF-IDF → optional NB scaling → LogisticRegression."""
    normalize = normalize_with_negation if hp.negation else normalize_text
    common = {
        "preprocessor": normalize,
        "min_df": hp.min_df,
        "max_df": hp.max_df,
        "sublinear_tf": hp.sublinear_tf,
        "dtype": np.float32,
    }
    parts: list[tuple[str, Any]] = [
        (
            "word",
            LeanTfidfVectorizer(
                token_pattern=WORD_PATTERN,
                ngram_range=(1, hp.ngram_max),
                max_features=hp.max_features or None,
                **common,
            ),
        )
    ]
    if hp.char_ngram_max:
        parts.append(
            (
                "char",
                LeanTfidfVectorizer(
                    analyzer="char_wb",
                    ngram_range=(2, hp.char_ngram_max),
                    max_features=hp.max_features or None,
                    **common,
                ),
            )
        )
    # One vectorizer stands alone: a FeatureUnion around it costs a sparse copy per request.
    features = FeatureUnion(parts) if len(parts) > 1 else parts[0][1]
    return Pipeline(
        [
            ("features", features),
            ("nb", NBLogCountRatio() if hp.nb_scaling else "passthrough"),
            (
                "clf",
                LogisticRegression(
                    C=hp.C,
                    max_iter=hp.max_iter,
                    class_weight=None if hp.class_weight == "none" else hp.class_weight,
                    random_state=seed,
                ),
            ),
        ]
    )


def fit_pipeline(
    pipeline: Pipeline,
    texts: list[str],
    labels: list[str],
    calibration_folds: int,
    seed: int,
    calibration_set: tuple[list[str], list[str]] | None = None,
) -> float:
    """Fit the pipeline and calibrate it by temperature scaling; return the temperature (1.0
    when ``calibration_folds`` is 0: no calibration, with or without a ``calibration_set``).

    The temperature is fitted on out-of-fold logits of the classifier head (NB scaling refitted
    per fold: it uses the labels), or, given a ``calibration_set`` (texts, labels), on the
    fitted model's logits for those texts: for data whose training texts are unlike what it
    will score (SST-2 trains on phrases and is used on sentences). Either way it is folded into
    the classifier's coefficients, so the served model is a plain LogisticRegression with no
    calibration overhead and its predictions (argmax) are unchanged. The NB ratios are folded in
    too (w·(x∘r) = (w∘r)·x): one sparse product less per request."""
    vectorizer = pipeline.named_steps["features"]
    features = vectorizer.fit_transform(texts)
    head = Pipeline(pipeline.steps[1:])
    temperature = 1.0
    if calibration_set is None and calibration_folds:
        folds = StratifiedKFold(calibration_folds, shuffle=True, random_state=seed)
        logits = cross_val_predict(
            clone(head), features, labels, cv=folds, method="decision_function"
        )
        temperature = fit_temperature(logits, labels, sorted(set(labels)))
    head.fit(features, labels)
    if calibration_set is not None and calibration_folds:  # 0 means off here too
        held_out_texts, held_out_labels = calibration_set
        logits = head.decision_function(vectorizer.transform(held_out_texts))
        temperature = fit_temperature(logits, held_out_labels, sorted(set(labels)))
    nb, clf = head.named_steps["nb"], head.named_steps["clf"]
    if nb != "passthrough":
        clf.coef_ *= nb.ratio_
    clf.coef_ /= temperature
    clf.intercept_ /= temperature
    pipeline.steps[1:] = [("nb", "passthrough"), ("clf", clf)]
    attach_ngram_indexes(pipeline)  # what serving scores with (training.scoring)
    return temperature


def fit_temperature(logits: np.ndarray, labels: list[str], classes: list[str]) -> float:
    """The T minimising the log loss of softmax(logits / T) (Guo et al. 2017)."""
    scores = logits.reshape(len(labels), -1)
    if scores.shape[1] == 1:  # binary: the logit of classes[1] against classes[0]
        scores = np.hstack([np.zeros_like(scores), scores])
    truth = np.searchsorted(classes, labels)

    def nll(log_t: float) -> float:
        return float(
            -log_softmax(scores / np.exp(log_t), axis=1)[np.arange(len(truth)), truth].mean()
        )

    result = minimize_scalar(nll, bounds=(-4.0, 4.0), method="bounded")
    return float(np.exp(result.x))


def save_pipeline(pipeline: Pipeline, path: Path) -> Path:
    """Pickle the fitted pipeline. Models come only from our own registry. Plain pickle (C
    unpickler) loads a large vocabulary in a fraction of a second where joblib's pure-Python
    unpickler took over 1 s and skops several: load time is the API's start-to-ready time."""
    with path.open("wb") as f:
        pickle.dump(pipeline, f, protocol=5)
    return path


def load_pipeline(path: Path) -> Pipeline:
    if path.suffix == ".joblib":  # versions registered before the switch to plain pickle
        pipeline: Pipeline = joblib.load(path)
        return pipeline
    with path.open("rb") as f:
        return cast(Pipeline, pickle.load(f))  # noqa: S301 - our own registry's artifact  # nosec B301


def probabilities(pipeline: Pipeline, texts: list[str]) -> np.ndarray:
    """Class probabilities (rows x classes) that sum to 1 in float64."""
    proba = pipeline.predict_proba(texts).astype(np.float64)
    proba /= proba.sum(axis=1, keepdims=True)  # float32 features: renormalise in float64
    return proba


def prediction_table(pipeline: Pipeline, texts: list[str]) -> pd.DataFrame:
    """One row per text: ``label``, ``confidence`` and ``prob_<class>`` for every class."""
    proba = probabilities(pipeline, texts)
    classes = [str(c) for c in pipeline.classes_]
    best = proba.argmax(axis=1)
    table = pd.DataFrame(
        {
            "label": np.asarray(classes, dtype=object)[best],
            "confidence": proba[np.arange(len(texts)), best],
        }
    )
    for i, cls in enumerate(classes):
        table[PROBABILITY_PREFIX + cls] = proba[:, i]
    return table


def class_weights(pipeline: Pipeline) -> np.ndarray:
    """Per class, how much one unit of each TF-IDF feature adds to that class's logit relative to
    the others (classes x features), NB scaling included. Binary: rows are -w and +w."""
    clf = pipeline.named_steps["clf"]
    coef = np.asarray(clf.coef_, dtype=np.float64)
    nb = pipeline.named_steps["nb"]
    if nb != "passthrough":
        coef = coef * nb.ratio_
    if coef.shape[0] == 1:
        return np.vstack([-coef[0], coef[0]])
    return coef - coef.mean(axis=0)


def vectorizers(pipeline: Pipeline) -> list[tuple[str, TfidfVectorizer]]:
    """The fitted vectorizers of the ``features`` step with their kind (word, char), in column
    order."""
    features = pipeline.named_steps["features"]
    if isinstance(features, FeatureUnion):
        return list(features.transformer_list)
    return [("word", features)]


def explain(
    pipeline: Pipeline, texts: list[str], top: int = 5
) -> list[dict[str, list[dict[str, Any]]]]:
    """Per text and class, the n-grams that pushed the prediction most towards that class, with
    their contributions to the (calibrated) logit: feature value x weight."""
    values = sp.csr_matrix(pipeline.named_steps["features"].transform(texts))
    weights = class_weights(pipeline)
    classes = [str(c) for c in pipeline.classes_]
    explanations = []
    for i, text in enumerate(texts):
        row = values.getrow(i)
        names = _ngram_names(pipeline, text)
        contributions = row.data[None, :] * weights[:, row.indices]
        explanation = {}
        for c, cls in enumerate(classes):
            order = np.argsort(-contributions[c])[:top]
            explanation[cls] = [
                {
                    "ngram": names.get(int(row.indices[k]), "?"),
                    "contribution": round(float(contributions[c, k]), 4),
                }
                for k in order
                if contributions[c, k] > 0
            ]
        explanations.append(explanation)
    return explanations


def _ngram_names(pipeline: Pipeline, text: str) -> dict[int, str]:
    """Column index -> n-gram for the n-grams of one text (cheaper than inverting a vocabulary
    of a million n-grams). Character n-grams are shown quoted."""
    names: dict[int, str] = {}
    offset = 0
    for kind, vectorizer in vectorizers(pipeline):
        vocabulary = vectorizer.vocabulary_
        for gram in set(vectorizer.build_analyzer()(text)):
            index = vocabulary.get(gram)
            if index is not None:
                names[offset + index] = gram if kind == "word" else repr(gram)
        offset += len(vocabulary)
    return names


def strongest_ngrams(pipeline: Pipeline, top: int = 30) -> pd.DataFrame:
    """The n-grams with the largest weight towards each class (a model-wide explanation)."""
    kinds, names = [], []
    for kind, vectorizer in vectorizers(pipeline):
        grams = vectorizer.get_feature_names_out()
        names.append(grams)
        kinds.append(np.full(len(grams), kind, dtype=object))
    all_names, all_kinds = np.concatenate(names), np.concatenate(kinds)
    weights = class_weights(pipeline)
    rows = []
    for c, cls in enumerate(pipeline.classes_):
        for rank, j in enumerate(np.argsort(-weights[c])[:top], start=1):
            kind, gram = str(all_kinds[j]), str(all_names[j])
            rows.append(
                {
                    "class": str(cls),
                    "rank": rank,
                    "ngram": gram,
                    "kind": kind,
                    "weight": float(weights[c, j]),
                }
            )
    return pd.DataFrame(rows)


def texts_from_input(model_input: Any) -> list[str]:
    """Accept what pyfunc clients send: a DataFrame (``text`` column, or a single column), a
    Series, a list/array of strings or one string."""
    if isinstance(model_input, pd.DataFrame):
        if "text" in model_input.columns:
            column = model_input["text"]
        elif model_input.shape[1] == 1:
            column = model_input.iloc[:, 0]
        else:
            raise ValueError(f"expected a 'text' column, got columns {list(model_input.columns)}")
        return [str(t) for t in column.tolist()]
    if isinstance(model_input, str):
        return [model_input]
    if isinstance(model_input, pd.Series | np.ndarray | list | tuple):
        return [str(t) for t in list(model_input)]
    raise TypeError(f"unsupported model input type {type(model_input).__name__}")


class SentimentModel(PythonModel):
    """pyfunc wrapper around the fitted pipeline (loaded from the ``pipeline`` artifact).

    ``params={"explain": True}`` adds an ``explanation`` column: per row, JSON of the n-grams
    that pushed the prediction towards each class."""

    def __init__(self) -> None:
        self.pipeline: Pipeline | None = None
        self.pipeline_path: Path | None = None  # where load_context read it (a local file)

    def load_context(self, context: Any) -> None:
        self.pipeline_path = Path(context.artifacts[PIPELINE_ARTIFACT])
        self.pipeline = load_pipeline(self.pipeline_path)

    @property
    def classes(self) -> list[str]:
        assert self.pipeline is not None, "model not loaded"
        return [str(c) for c in self.pipeline.classes_]

    def predict(
        self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> pd.DataFrame:
        assert self.pipeline is not None, "model not loaded"
        texts = texts_from_input(model_input)
        table = prediction_table(self.pipeline, texts)
        if params and params.get("explain"):
            table["explanation"] = [json.dumps(e) for e in explain(self.pipeline, texts)]
        return table
