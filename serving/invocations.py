"""Texts and params out of `mlflow models serve` payloads, so its clients can switch without
changes.

Formats (as MLflow's scoring server): JSON ``dataframe_split``, ``dataframe_records``,
``instances``, ``inputs``, each optionally with ``params`` (the model's: ``explain``), or CSV
with a ``text`` header. Refused as MLflow refuses them: a Content-Type charset other than UTF-8
or with unknown parameters (415), a body that is no known format (400 ``BAD_REQUEST``), rows
without a ``text`` column or params of the wrong type (400 ``INVALID_PARAMETER_VALUE``).

Where we differ on purpose (tests/integration/test_mlflow_protocol.py lists each): a cell that
is not a string is refused, not turned into one (``null`` would be classified as "None"); a
``dataframe_split`` without ``columns`` reads its one column as the text; any Content-Type but
CSV is read as JSON.
"""

from __future__ import annotations

import csv
import email.message
import io
from dataclasses import dataclass, field
from typing import Any

import orjson

from serving.errors import InvalidParams, PayloadError, SchemaMismatch, UnsupportedMediaType

FORMATS = ("dataframe_split", "dataframe_records", "instances", "inputs")
# The model's params (its signature's ParamSchema): name -> type.
PARAMS: dict[str, type] = {"explain": bool}


@dataclass(frozen=True)
class Invocation:
    """What an ``/invocations`` request asks: the texts, in order, and the model's params."""

    texts: list[str]
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def explain(self) -> bool:
        return bool(self.params.get("explain", False))


def read_invocation(body: bytes, content_type: str) -> Invocation:
    if _media_type(content_type) == "text/csv":
        return Invocation(_from_csv(body))  # CSV carries no params, as in MLflow
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise PayloadError(f"body is not valid JSON: {exc}") from exc
    if not isinstance(payload, dict):
        raise PayloadError(f"expected a JSON object with one of {FORMATS}")
    keys = [k for k in FORMATS if k in payload]
    if len(keys) != 1:
        raise PayloadError(f"expected exactly one of {FORMATS}, got keys {sorted(payload)}")
    return Invocation(_texts(keys[0], payload[keys[0]]), _params(payload.get("params")))


def texts_from_payload(body: bytes, content_type: str) -> list[str]:
    return read_invocation(body, content_type).texts


def _media_type(content_type: str) -> str:
    """The media type, lower case; refuses what MLflow refuses: a charset other than UTF-8,
    parameters other than charset."""
    message = email.message.Message()
    message["content-type"] = content_type or "application/json"
    parameters = dict(message.get_params(failobj=[])[1:])
    charset = parameters.pop("charset", "utf-8").lower()
    if charset != "utf-8":
        raise UnsupportedMediaType(f"charset {charset!r}: the scoring server only supports UTF-8")
    if parameters:
        raise UnsupportedMediaType(f"unrecognized Content-Type parameters: {sorted(parameters)}")
    return message.get_content_type()


def _params(value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidParams(f"params must be a JSON object, got {type(value).__name__}")
    for name, kind in PARAMS.items():
        if name in value and not isinstance(value[name], kind):
            raise InvalidParams(
                f"params.{name} must be a {kind.__name__}, got {type(value[name]).__name__}"
            )
    # Unknown params are left out, as MLflow does (it logs a warning).
    return {name: value[name] for name in PARAMS if name in value}


def _texts(kind: str, value: Any) -> list[str]:
    if kind == "dataframe_split":
        return _split_texts(value)
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
    if isinstance(value, str):
        raise SchemaMismatch(f"{kind} is a bare string; send a list of texts or {{'text': [...]}}")
    if not isinstance(value, list):
        raise SchemaMismatch(f"{kind} must be a list of texts or {{'text': [...]}}")
    return [_cell(v.get("text") if isinstance(v, dict) else v, i) for i, v in enumerate(value)]


def _split_texts(value: Any) -> list[str]:
    """The text column of a ``dataframe_split``: each row has one cell per column (as pandas
    requires), the text under the first ``text`` column."""
    if not isinstance(value, dict) or "data" not in value:
        raise PayloadError("dataframe_split needs {'columns': [...], 'data': [[...], ...]}")
    if unknown := sorted(set(value) - {"columns", "data", "index"}):
        raise PayloadError(f"dataframe_split takes columns, data and index; got {unknown}")
    columns = value.get("columns")
    columns = ["text"] if columns is None else columns
    column = _text_column(columns)
    rows = value["data"]
    if not isinstance(rows, list):
        raise PayloadError("dataframe_split.data must be a list of rows")
    index = value.get("index")
    if index is not None and (not isinstance(index, list) or len(index) != len(rows)):
        raise PayloadError("dataframe_split.index must have one entry per row of data")
    for i, row in enumerate(rows):
        if not isinstance(row, list) or len(row) != len(columns):
            raise PayloadError(
                f"dataframe_split.data row {i}: expected a list of {len(columns)} cells, one "
                f"per column of {columns}"
            )
    return [_cell(row[column], i) for i, row in enumerate(rows)]


def _text_column(columns: Any) -> int:
    if not isinstance(columns, list) or not all(isinstance(c, str) for c in columns):
        raise PayloadError("dataframe_split.columns must be a list of column names (strings)")
    if "text" in columns:
        return columns.index("text")
    raise SchemaMismatch(f"expected a 'text' column, got {columns}")


def _cell(value: Any, row: int) -> str:
    if not isinstance(value, str):
        raise SchemaMismatch(f"row {row}: expected a text string, got {type(value).__name__}")
    return value


def _from_csv(body: bytes) -> list[str]:
    try:
        reader = csv.DictReader(io.StringIO(body.decode("utf-8")))
        rows = list(reader)
    except (UnicodeDecodeError, csv.Error) as exc:
        raise PayloadError(f"body is not UTF-8 CSV: {exc}") from exc
    fields = reader.fieldnames or []
    if not fields:
        raise PayloadError("CSV needs a 'text' column, got an empty body")
    if "text" not in fields:
        raise SchemaMismatch(f"CSV needs a 'text' column, got {fields}")
    return [_cell(r["text"], i) for i, r in enumerate(rows)]
