"""The OpenAPI document states what the server accepts: the admin route only while admin is on,
the labels /feedback takes (the loaded model's classes), CSV bodies /invocations reads, and the
protocol routes with their own error bodies."""

from __future__ import annotations

import asyncio
import json
import re
from types import SimpleNamespace
from typing import Any

import httpx
import jsonschema
import pytest

from serving.app import create_app
from serving.errors import ServingError
from serving.invocations import read_invocation
from serving.metrics import build_metrics
from serving.routes.invocations import CSV_PATTERN
from serving.schemas import CLASSIFIABLE_TEXT, text_problem
from serving.service import Service
from serving.settings import ServingSettings


def openapi(classes: list[str] | None = None, **settings: Any) -> dict[str, Any]:
    app = create_app(ServingSettings(model_uri="models:/unused@production", **settings))
    if classes is not None:  # a loaded model, as far as the document is concerned
        model = SimpleNamespace(classes=classes)
        app.state.service = SimpleNamespace(
            store=SimpleNamespace(current=model), metrics=build_metrics(), in_flight=0
        )
    transport = httpx.ASGITransport(app=app)

    async def fetch() -> dict[str, Any]:
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
            document: dict[str, Any] = (await client.get("/openapi.json")).json()
            return document

    return asyncio.run(fetch())


def test_admin_route_is_documented_only_while_admin_is_on() -> None:
    assert "/admin/reload" not in openapi()["paths"]
    assert "/admin/reload" in openapi(admin_token="s3cret")["paths"]


def label_schema(document: dict[str, Any]) -> dict[str, Any]:
    schema: dict[str, Any] = document["components"]["schemas"]["FeedbackRequest"]
    label: dict[str, Any] = schema["properties"]["label"]
    return label


def test_feedback_labels_are_the_loaded_models_classes() -> None:
    assert "enum" not in label_schema(openapi())
    assert label_schema(openapi(["negative", "positive"]))["enum"] == ["negative", "positive"]
    assert label_schema(openapi(["anger", "joy"], api_keys="k1"))["enum"] == ["anger", "joy"]


def test_csv_bodies_are_documented_as_read() -> None:
    body = openapi(max_text_chars=5, max_batch_texts=2)["paths"]["/invocations"]["post"]
    schema = body["requestBody"]["content"]["text/csv"]["schema"]
    assert schema["pattern"] == CSV_PATTERN.format(chars=5, rows=2)
    documented = re.compile(schema["pattern"])
    for csv in ("text\nLoved\n", "text\r\nA.\r\n  ok\n", "text", "text\n", "text\n12345"):
        assert documented.search(csv) and server_accepts(csv.encode(), "text/csv", 5, 2), csv
    # refused by both: a text over max_text_chars, rows over max_batch_texts, no text column
    for csv in ("", "review\na\n", "text\n  \n", "text\n123456", "text\na\nb\nc\n"):
        assert not documented.search(csv), csv
        assert not server_accepts(csv.encode(), "text/csv", 5, 2), csv
    for csv in ("text\na,b\n", 'text\n"a"\n'):  # read, as by MLflow, but not documented
        assert not documented.search(csv), csv


def test_protocol_routes_are_documented_with_their_error_bodies() -> None:
    document = openapi()
    paths = document["paths"]
    for path in ("/ping", "/version", "/v2", "/v2/health/ready", "/v2/models/{name}/infer"):
        assert path in paths, path
    infer = paths["/v2/models/{name}/infer"]["post"]["responses"]["400"]
    assert infer["content"]["application/json"]["schema"]["$ref"].endswith("/OpenInferenceError")
    invocations = paths["/invocations"]["post"]["responses"]["400"]
    assert invocations["content"]["application/json"]["schema"]["$ref"].endswith(
        "/MlflowErrorResponse"
    )


def test_the_documented_text_pattern_is_the_servers_blank_and_nul_rule() -> None:
    pattern = re.compile(CLASSIFIABLE_TEXT)
    for code in (*range(0x2100), 0x3000, 0xFEFF, 0x10FFFF):  # controls, Latin, spaces, the ends
        text = chr(code)
        assert (text_problem(text) is None) == bool(pattern.search(text)), hex(code)
    for text in ("a\x00b", " \x1c\u2003", "Loved it!", "  a  "):
        assert (text_problem(text) is None) == bool(pattern.search(text)), text


def test_invocations_formats_are_documented_with_the_limits() -> None:
    document = openapi(max_batch_texts=7, max_text_chars=90)
    body = document["paths"]["/invocations"]["post"]["requestBody"]["content"]["application/json"]
    variants = {variant["required"][0]: variant for variant in body["schema"]["oneOf"]}
    assert set(variants) == {"dataframe_split", "dataframe_records", "instances", "inputs"}
    instances = variants["instances"]["properties"]["instances"]["anyOf"][0]
    assert instances["maxItems"] == 7 and instances["items"]["anyOf"][0]["maxLength"] == 90
    assert variants["inputs"]["properties"]["params"]["properties"]["explain"]["type"] == "boolean"


def server_accepts(
    body: bytes, content_type: str, max_text_chars: int = 20, max_batch_texts: int = 3
) -> bool:
    """Whether /invocations reads ``body`` and its texts pass the service's rules."""
    settings = ServingSettings(
        model_uri="m", max_text_chars=max_text_chars, max_batch_texts=max_batch_texts
    )
    try:
        texts = read_invocation(body, content_type).texts
        if texts:
            Service.check_texts(SimpleNamespace(settings=settings), texts)  # type: ignore[arg-type]
    except ServingError:
        return False
    return True


# (body, valid by the schema alone, accepted by the server): they differ only where a rule the
# description states (a cell per column, an index entry per row) is broken.
INVOCATIONS = [
    ({"dataframe_split": {"columns": ["text"], "data": [["a"], ["b"]]}}, True, True),
    ({"dataframe_split": {"columns": ["id", "text"], "data": [[1, "a"]]}}, True, True),
    ({"dataframe_split": {"columns": ["text", "text"], "data": [["a", 2]]}}, True, True),
    ({"dataframe_split": {"data": [["a"]], "index": [7]}}, True, True),
    ({"dataframe_split": {"columns": None, "data": [], "index": None}}, True, True),
    ({"dataframe_split": {"columns": ["id", "text"], "data": [["a"]]}}, True, False),
    ({"dataframe_split": {"columns": ["text"], "data": [["a"]], "index": [1, 2]}}, True, False),
    ({"dataframe_split": {"columns": ["text", "text"], "data": [[], []]}}, False, False),
    ({"dataframe_split": {"columns": ["text", 1], "data": [["a", 1]]}}, False, False),
    ({"dataframe_split": {"columns": ["review"], "data": [["a"]]}}, False, False),
    ({"dataframe_split": {"data": [["a"]], "extra": 1}}, False, False),
    ({"dataframe_split": {"data": [["a"]] * 4}}, False, False),
    ({"dataframe_split": {"data": [["a"]], "index": 3}}, False, False),
    ({"dataframe_records": [{"text": "a", "stars": 5}]}, True, True),
    ({"dataframe_records": ["a"]}, False, False),
    ({"instances": ["a", {"text": "b"}]}, True, True),
    ({"instances": {"text": ["a", {"text": "b"}]}}, True, True),
    ({"inputs": {"text": "a", "id": 3}}, True, True),
    ({"inputs": [" "]}, False, False),
    ({"inputs": ["a" * 21]}, False, False),
    ({"inputs": "a"}, False, False),
    ({"inputs": [["a"]]}, False, False),
    ({"inputs": ["a"], "params": {"explain": True, "other": 1}}, True, True),
    ({"inputs": ["a"], "params": {"explain": "yes"}}, False, False),
    ({"inputs": ["a"], "instances": ["b"]}, False, False),
    ({"text": "a"}, False, False),
]


@pytest.mark.parametrize(("body", "valid", "accepted"), INVOCATIONS)
def test_invocations_schema_and_server_agree(body: Any, valid: bool, accepted: bool) -> None:
    document = openapi(max_text_chars=20, max_batch_texts=3)
    content = document["paths"]["/invocations"]["post"]["requestBody"]["content"]
    validator = jsonschema.Draft202012Validator(content["application/json"]["schema"])
    accepts = server_accepts(json.dumps(body).encode(), "application/json")
    assert (validator.is_valid(body), accepts) == (valid, accepted)


def test_v2_infer_schema_names_the_model_and_states_the_limits() -> None:
    document = openapi(max_text_chars=20, max_batch_texts=3)
    infer = document["paths"]["/v2/models/{name}/infer"]["post"]
    assert infer["parameters"][0]["schema"]["enum"] == ["unused"]
    schema = infer["requestBody"]["content"]["application/json"]["schema"]
    validator = jsonschema.Draft202012Validator(schema)
    tensor = {"name": "text", "shape": [2], "datatype": "BYTES", "data": ["a", ["b"]]}
    assert validator.is_valid({"inputs": [tensor], "outputs": [{"name": "label"}]})
    for wrong in (
        {**tensor, "name": "txt"},
        {**tensor, "datatype": "FP32"},
        {**tensor, "shape": [2, 2]},
        {**tensor, "shape": [4]},
        {**tensor, "data": ["a", ["b", "c"]]},
        {**tensor, "data": ["a" * 21]},
    ):
        assert not validator.is_valid({"inputs": [wrong]}), wrong
    assert not validator.is_valid({"inputs": [tensor], "outputs": [{"name": "logits"}]})
    assert not validator.is_valid({"inputs": [tensor, tensor]})
