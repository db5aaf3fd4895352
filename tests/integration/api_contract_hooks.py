"""Schemathesis hooks for tests/integration/test_api_contract.py (loaded by the schemathesis
process through SCHEMATHESIS_HOOKS): the rules between fields that JSON Schema cannot state and
the OpenAPI document states in words. Positive cases are made to keep them, so "valid" means
what the server accepts; negative cases are left as generated."""

from __future__ import annotations

from typing import Any

import schemathesis

PLACEHOLDER = "A placeholder text."  # for a cell the rule says must be a text


@schemathesis.hook
def map_case(context: Any, case: Any) -> Any:
    meta = case.meta
    if meta is None or not meta.generation.mode.is_positive or not isinstance(case.body, dict):
        return case
    path = case.operation.path
    if path == "/invocations" and isinstance(case.body.get("dataframe_split"), dict):
        fit_split(case.body["dataframe_split"])
    elif path.endswith("/infer"):
        for tensor in case.body.get("inputs") or []:
            if isinstance(tensor, dict) and tensor.get("shape") and "data" in tensor:
                # shape[0]: the number of texts
                tensor["shape"] = [len(tensor["data"]), *tensor["shape"][1:]]
    return case


def fit_split(split: dict[str, Any]) -> None:
    """One cell per column, a text under the first text column, one index entry per row."""
    columns = split.get("columns") or ["text"]
    column = columns.index("text")
    rows = []
    for row in split.get("data") or []:
        cells = (list(row) + [None] * len(columns))[: len(columns)]
        if not is_text(cells[column]):
            cells[column] = PLACEHOLDER
        rows.append(cells)
    if "data" in split:
        split["data"] = rows
    if isinstance(split.get("index"), list):
        split["index"] = list(range(len(rows)))


def is_text(value: Any) -> bool:
    return isinstance(value, str) and bool(value.strip()) and "\x00" not in value
