"""The OpenAPI document states what the server accepts: the admin route only while admin is on,
the labels /feedback takes (the loaded model's classes), CSV bodies /invocations reads, and the
protocol routes with their own error bodies."""

from __future__ import annotations

import asyncio
import re
from types import SimpleNamespace
from typing import Any

import httpx

from serving.app import create_app
from serving.invocations import read_invocation
from serving.metrics import build_metrics
from serving.routes.invocations import CSV_PATTERN
from serving.schemas import CLASSIFIABLE_TEXT, text_problem
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
    body = openapi()["paths"]["/invocations"]["post"]["requestBody"]["content"]["text/csv"]
    assert body["schema"]["pattern"] == CSV_PATTERN
    header = re.compile(CSV_PATTERN)
    for documented in ("text\nLoved it!\n", "text\r\nA film.\r\nDull.", "text", "text\n"):
        assert header.search(documented), documented
        assert read_invocation(documented.encode(), "text/csv") is not None
    for undocumented in ("", "review\na\n", "text\n  \n", "text\na,b\n", 'text\n"a"\n'):
        assert not header.search(undocumented), undocumented


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
    instances = variants["instances"]["properties"]["instances"]
    assert instances["maxItems"] == 7 and instances["items"]["maxLength"] == 90
    assert variants["inputs"]["properties"]["params"]["properties"]["explain"]["type"] == "boolean"
