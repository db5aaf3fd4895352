"""The scored table: which texts get no prediction, and where the output's columns go."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from batch.table import (
    EMPTY_TEXT,
    NUL_TEXT,
    NULL_TEXT,
    output_layout,
    scored_batch,
    text_problem,
    too_long,
)
from emotitrack.core.registry import ModelRef

REF = ModelRef("models:/m@production", "m", "3", "run3", "alias production", "models:/m/3")


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("fine", None),
        (None, NULL_TEXT),
        ("", EMPTY_TEXT),
        (" \t\n\x1c", EMPTY_TEXT),
        ("a\x00b", NUL_TEXT),
        ("x" * 10, None),
        ("x" * 11, too_long(10)),
    ],
)
def test_text_problems(text: str | None, problem: str | None) -> None:
    assert text_problem(text, max_chars=10) == problem


def test_input_columns_named_like_output_columns_are_kept_renamed() -> None:
    schema = pa.schema([("label", pa.string()), ("text", pa.string()), ("input_label", pa.int8())])
    layout = output_layout(schema, ["negative", "positive"])
    assert layout.renamed == {"label": "input_input_label"}
    assert layout.schema.names == [
        "input_input_label", "text", "input_label", "label", "confidence", "prob_negative",
        "prob_positive", "model_name", "model_version", "model_run_id", "error",
    ]  # fmt: skip


def test_rows_with_a_problem_get_an_error_and_no_prediction() -> None:
    batch = pa.record_batch({"id": [1, 2, 3], "text": ["bad", None, "good"]})
    layout = output_layout(batch.schema, ["negative", "positive"])
    proba = np.array([[0.9, 0.1], [0.2, 0.8]])
    scored = scored_batch(batch, ["bad", None, "good"], [None, NULL_TEXT, None], proba, layout, REF)
    rows = scored.to_pylist()
    assert [r["id"] for r in rows] == [1, 2, 3]
    assert [r["label"] for r in rows] == ["negative", None, "positive"]
    assert [r["confidence"] for r in rows] == [0.9, None, 0.8]
    assert [r["prob_positive"] for r in rows] == [0.1, None, 0.8]
    assert [r["error"] for r in rows] == [None, NULL_TEXT, None]
    assert {(r["model_name"], r["model_version"], r["model_run_id"]) for r in rows} == {
        ("m", "3", "run3")
    }


def test_a_batch_without_any_scorable_text() -> None:
    batch = pa.record_batch({"text": ["", None]})
    layout = output_layout(batch.schema, ["negative", "positive"])
    scored = scored_batch(batch, ["", None], [EMPTY_TEXT, NULL_TEXT], np.zeros((0, 2)), layout, REF)
    assert scored.column("label").null_count == 2
    assert scored.column("error").to_pylist() == [EMPTY_TEXT, NULL_TEXT]
