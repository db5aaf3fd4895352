"""The pipeline and its pyfunc wrapper, on a small real sample."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.pipeline import Pipeline

from training.model import (
    Hyperparameters,
    build_pipeline,
    prediction_table,
    texts_from_input,
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
