"""The scored table: which texts can be scored, and the output columns around the input's."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from emotitrack.core.model_format import PROBABILITY_PREFIX
from emotitrack.core.registry import ModelRef

NULL_TEXT = "null text"
EMPTY_TEXT = "empty text"
NUL_TEXT = "text contains NUL characters"
# The input columns the output replaces: an input column of the same name is kept renamed.
RENAMED_PREFIX = "input_"

Probabilities = Callable[[list[str]], np.ndarray]


def too_long(max_chars: int) -> str:
    return f"text longer than {max_chars} characters"


def text_problem(text: str | None, max_chars: int) -> str | None:
    """Why ``text`` gets no prediction, or None. The API's rule (not blank, no NUL, not too
    long), so a text the API refuses is not scored here either."""
    if text is None:
        return NULL_TEXT
    if not text.strip():
        return EMPTY_TEXT
    if len(text) > max_chars:
        return too_long(max_chars)
    return NUL_TEXT if "\x00" in text else None


@dataclass(frozen=True)
class OutputLayout:
    """The output schema: the input's columns (renamed where they clash), then the prediction's."""

    schema: pa.Schema
    classes: tuple[str, ...]
    renamed: dict[str, str]  # input column -> its name in the output, where it clashed


def output_columns(classes: Sequence[str]) -> list[pa.Field]:
    return [
        pa.field("label", pa.string()),
        pa.field("confidence", pa.float64()),
        *(pa.field(PROBABILITY_PREFIX + c, pa.float64()) for c in classes),
        pa.field("model_name", pa.string()),
        pa.field("model_version", pa.string()),
        pa.field("model_run_id", pa.string()),
        pa.field("error", pa.string()),
    ]


def output_layout(input_schema: pa.Schema, classes: Sequence[str]) -> OutputLayout:
    """Every input column, then the prediction's; an input column named like one of those
    (a ``label`` column of labelled data) is kept as ``input_<name>``."""
    added = output_columns(classes)
    taken = {f.name for f in added}
    taken |= set(input_schema.names)
    kept, renamed = [], {}
    for f in input_schema:
        name = f.name
        if name in {a.name for a in added}:
            while name in taken:
                name = RENAMED_PREFIX + name
            taken.add(name)
            renamed[f.name] = name
        kept.append(f.with_name(name))
    return OutputLayout(pa.schema(kept + added), tuple(classes), renamed)


def scored_batch(
    batch: pa.RecordBatch,
    texts: Sequence[str | None],
    problems: Sequence[str | None],
    proba: np.ndarray,
    layout: OutputLayout,
    model: ModelRef,
) -> pa.RecordBatch:
    """``batch`` with the prediction columns; ``proba`` holds a row per text without a problem."""
    rows = len(texts)
    ok = np.array([p is None for p in problems], dtype=bool)
    full = np.full((rows, len(layout.classes)), np.nan)
    full[ok] = proba
    mask = ~ok
    best = proba.argmax(axis=1) if len(proba) else np.zeros(0, dtype=np.int64)
    labels: list[str | None] = [None] * rows
    classes = layout.classes
    for row, index in zip(np.flatnonzero(ok).tolist(), best.tolist(), strict=True):
        labels[row] = classes[index]
    confidence = np.full(rows, np.nan)
    confidence[ok] = proba[np.arange(len(proba)), best] if len(proba) else []
    columns: list[pa.Array] = [*batch.columns]
    columns.append(pa.array(labels, type=pa.string()))
    columns.append(pa.array(confidence, mask=mask))
    columns.extend(pa.array(full[:, i], mask=mask) for i in range(len(classes)))
    for value in (model.name, model.version, model.run_id):
        columns.append(pa.array([value] * rows, type=pa.string()))
    columns.append(pa.array(list(problems), type=pa.string()))
    return pa.RecordBatch.from_arrays(columns, schema=layout.schema)
