"""Texts out of `mlflow models serve` payloads."""

from __future__ import annotations

import pytest

from serving.errors import PayloadError
from serving.invocations import texts_from_payload

JSON = "application/json"


@pytest.mark.parametrize(
    "body",
    [
        b'{"dataframe_split": {"columns": ["text"], "data": [["a"], ["b"]]}}',
        b'{"dataframe_split": {"columns": ["id", "text"], "data": [[1, "a"], [2, "b"]]}}',
        b'{"dataframe_split": {"index": [0, 1], "data": [["a"], ["b"]]}}',
        b'{"dataframe_records": [{"text": "a"}, {"text": "b"}]}',
        b'{"instances": ["a", "b"]}',
        b'{"instances": [{"text": "a"}, {"text": "b"}]}',
        b'{"inputs": ["a", "b"], "params": {"x": 1}}',
        b'{"inputs": {"text": ["a", "b"]}}',
    ],
)
def test_json_formats(body: bytes) -> None:
    assert texts_from_payload(body, JSON) == ["a", "b"]


def test_csv() -> None:
    assert texts_from_payload(b'text\na\n"b, with comma"\n', "text/csv; charset=utf-8") == [
        "a",
        "b, with comma",
    ]


@pytest.mark.parametrize(
    ("body", "content_type", "message"),
    [
        (b"{", JSON, "not valid JSON"),
        (b"[1]", JSON, "JSON object"),
        (b'{"instances": ["a"], "inputs": ["b"]}', JSON, "exactly one of"),
        (
            b'{"dataframe_split": {"columns": ["a", "b"], "data": [["x", "y"]]}}',
            JSON,
            "expected a 'text' column",
        ),
        (
            b'{"dataframe_split": {"data": [[null]]}}',
            JSON,
            "row 0: expected a text string, got NoneType",
        ),
        (b'{"dataframe_records": [{"body": "a"}]}', JSON, "row 0"),
        (b'{"instances": 5}', JSON, "must be a list of texts"),
        (b"a,b\n1,2\n", "text/csv", "CSV needs a 'text' column"),
        (b"\xff\xfe", "text/csv", "not UTF-8 CSV"),
    ],
)
def test_refusals_say_what_is_expected(body: bytes, content_type: str, message: str) -> None:
    with pytest.raises(PayloadError, match=message):
        texts_from_payload(body, content_type)
