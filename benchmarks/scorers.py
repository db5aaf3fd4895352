"""The scorers the benchmarks time in-process: what the API scores with (``served``, the model
format's scorer) and scikit-learn's ``predict_proba`` (the reference). The only benchmark module
that knows how a model holds its scorer: when the model format changes, this is what follows it."""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.pipeline import Pipeline

from emotitrack.core import model_format
from training.export import to_format

Scorer = Callable[[Sequence[str]], np.ndarray]


@dataclass(frozen=True)
class Scorers:
    predict_proba: Scorer
    served: Scorer


def registered_scorer(model_uri: str) -> Scorer:
    """The served scorer of a registered model (``models:/NAME@alias``). A registered model
    holds no scikit-learn pipeline, so there is no ``predict_proba`` to go with it."""
    directory = model_format.download(model_uri, Path(tempfile.mkdtemp(prefix="bench-model-")))
    scorer = model_format.read_logged(directory)
    if scorer is None:
        raise ValueError(f"{model_uri} is not in EmotiTrack's model format")
    return scorer.probabilities


def fitted_scorers(pipeline: Pipeline) -> Scorers:
    """Both scorers of a pipeline fitted in this process, exported as training exports it."""
    return Scorers(pipeline.predict_proba, to_format(pipeline).scorer.probabilities)
