"""Texts out of `mlflow models serve` payloads, so its clients can switch without changes.

Formats (as MLflow's scoring server): JSON ``dataframe_split``, ``dataframe_records``,
``instances``, ``inputs`` (optionally with ``params``, ignored), or CSV with a header row.
"""

from __future__ import annotations

import csv
import io
from typing import Any

import orjson

from serving.errors import PayloadError

FORMATS = ("dataframe_split", "dataframe_records", "instances", "inputs")


def texts_from_payload(body: bytes, content_type: str) -> list[str]:
    if content_type.split(";")[0].strip().lower() == "text/csv":
        return _from_csv(body)
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise PayloadError(f"body is not valid JSON: {exc}") from exc
    if not isinstance(payload, dict):
        raise PayloadError(f"expected a JSON object with one of {FORMATS}")
    keys = [k for k in FORMATS if k in payload]
    if len(keys) != 1:
        raise PayloadError(f"expected exactly one of {FORMATS}, got keys {sorted(payload)}")
    return _texts(keys[0], payload[keys[0]])


def _texts(kind: str, value: Any) -> list[str]:
    if kind == "dataframe_split":
        if not isinstance(value, dict) or "data" not in value:
            raise PayloadError("dataframe_split needs {'columns': [...], 'data': [[...], ...]}")
        columns = value.get("columns") or ["text"]
        column = _text_column(columns)
        rows = value["data"]
        if not isinstance(rows, list):
            raise PayloadError("dataframe_split.data must be a list of rows")
        return [
            _cell(row[column] if isinstance(row, list) and len(row) > column else None, i)
            for i, row in enumerate(rows)
        ]
    if kind == "dataframe_records":
        if not isinstance(value, list):
            raise PayloadError("dataframe_records must be a list of {'text': ...} objects")
        return [
            _cell(r.get("text") if isinstance(r, dict) else None, i) for i, r in enumerate(value)
        ]
    # instances / inputs: a list of texts, a list of {'text': ...}, or {'text': [...]}
    if isinstance(value, dict):
        value = value.get("text")
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        raise PayloadError(f"{kind} must be a list of texts or {{'text': [...]}}")
    return [_cell(v.get("text") if isinstance(v, dict) else v, i) for i, v in enumerate(value)]


def _text_column(columns: Any) -> int:
    if not isinstance(columns, list):
        raise PayloadError("dataframe_split.columns must be a list")
    if "text" in columns:
        return columns.index("text")
    if len(columns) == 1:
        return 0
    raise PayloadError(f"expected a 'text' column, got {columns}")


def _cell(value: Any, row: int) -> str:
    if not isinstance(value, str):
        raise PayloadError(f"row {row}: expected a text string, got {type(value).__name__}")
    return value


def _from_csv(body: bytes) -> list[str]:
    try:
        reader = csv.DictReader(io.StringIO(body.decode("utf-8")))
        rows = list(reader)
    except (UnicodeDecodeError, csv.Error) as exc:
        raise PayloadError(f"body is not UTF-8 CSV: {exc}") from exc
    fields = reader.fieldnames or []
    if "text" not in fields and len(fields) != 1:
        raise PayloadError(f"CSV needs a 'text' column, got {fields}")
    column = "text" if "text" in fields else fields[0]
    return [_cell(r[column], i) for i, r in enumerate(rows)]
