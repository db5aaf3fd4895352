"""The sentiment model as trained: one scikit-learn pipeline (TF-IDF features, Naive-Bayes
scaling, a temperature-calibrated LogisticRegression).

It is the reference: what is logged and served is its export to the model format
(``training.export``, ``emotitrack.core.model_format``), whose probabilities are tested equal.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax
from sklearn.base import clone
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.pipeline import FeatureUnion, Pipeline

from emotitrack.core import model_format
from training.features import (
    WORD_PATTERN,
    LeanTfidfVectorizer,
    NBLogCountRatio,
    normalize_text,
    normalize_with_negation,
)
from training.hyperparameters import Hyperparameters


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


def probabilities(pipeline: Pipeline, texts: list[str]) -> np.ndarray:
    """Class probabilities (rows x classes) that sum to 1 in float64."""
    proba = pipeline.predict_proba(texts).astype(np.float64)
    proba /= proba.sum(axis=1, keepdims=True)  # float32 features: renormalise in float64
    return proba


def prediction_table(pipeline: Pipeline, texts: list[str]) -> pd.DataFrame:
    """One row per text: ``label``, ``confidence`` and ``prob_<class>`` for every class, as the
    logged model's pyfunc ``predict`` answers."""
    table: pd.DataFrame = model_format.prediction_table(
        probabilities(pipeline, texts), [str(c) for c in pipeline.classes_]
    )
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
