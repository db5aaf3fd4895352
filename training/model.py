"""The sentiment model: a TF-IDF + LogisticRegression pipeline and its MLflow pyfunc wrapper.

The wrapper exists because a bare scikit-learn text pipeline behind pyfunc is silently wrong:
pyfunc hands it a DataFrame, the vectorizer iterates the column *names*, and N rows get one
prediction. The wrapper takes the ``text`` column explicitly and returns, per row, the label, its
probability (``confidence``) and one ``prob_<label>`` column per class.
"""

from __future__ import annotations

import pickle
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, cast

import joblib
import numpy as np
import pandas as pd
from mlflow.pyfunc import PythonModel
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline

PIPELINE_ARTIFACT = "pipeline"
PROBABILITY_PREFIX = "prob_"


@dataclass(frozen=True)
class Hyperparameters:
    """Pipeline knobs, exposed as MLproject parameters. Defaults chosen on a validation split
    of the IMDB training data (never on test): C=10 > 5 > 2 at 100k features."""

    max_features: int = 100_000
    ngram_max: int = 2
    min_df: int = 2
    max_df: float = 0.95
    sublinear_tf: bool = True
    C: float = 10.0
    max_iter: int = 1000

    def as_params(self) -> dict[str, Any]:
        return asdict(self)


def build_pipeline(hp: Hyperparameters, seed: int) -> Pipeline:
    return Pipeline(
        [
            (
                "tfidf",
                TfidfVectorizer(
                    ngram_range=(1, hp.ngram_max),
                    min_df=hp.min_df,
                    max_df=hp.max_df,
                    max_features=hp.max_features,
                    sublinear_tf=hp.sublinear_tf,
                    dtype=np.float32,
                ),
            ),
            ("clf", LogisticRegression(C=hp.C, max_iter=hp.max_iter, random_state=seed)),
        ]
    )


def save_pipeline(pipeline: Pipeline, path: Path) -> Path:
    """Pickle the fitted pipeline. Models come only from our own registry. Plain pickle (C
    unpickler) loads the 100k-term vocabulary in ~0.1 s where joblib's pure-Python unpickler took
    over 1 s and skops several: load time is the API's start-to-ready time."""
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
    """pyfunc wrapper around the fitted pipeline (loaded from the ``pipeline`` artifact)."""

    def __init__(self) -> None:
        self.pipeline: Pipeline | None = None

    def load_context(self, context: Any) -> None:
        self.pipeline = load_pipeline(Path(context.artifacts[PIPELINE_ARTIFACT]))

    @property
    def classes(self) -> list[str]:
        assert self.pipeline is not None, "model not loaded"
        return [str(c) for c in self.pipeline.classes_]

    def predict(
        self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> pd.DataFrame:
        assert self.pipeline is not None, "model not loaded"
        return prediction_table(self.pipeline, texts_from_input(model_input))
