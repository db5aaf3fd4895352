"""The Open Inference Protocol (V2) over real HTTP, driven by a real client of it
(``tritonclient[http]``, as KServe, MLServer and Triton users have), and its error bodies."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import numpy as np
import pytest
import tritonclient.http as triton
import yaml
from tritonclient.utils import InferenceServerException

from harness.processes import HOST
from harness.registries import Registry, make_registry
from harness.servers import ApiServer, start_api

pytestmark = pytest.mark.integration
MODEL = "emotitrack-sentiment"
OUTPUTS = ("label", "confidence", "probabilities", "request_id")
TEXTS = ["Loved it, a wonderful film.", "Dull and far too long."]
JSON = {"content-type": "application/json"}


@pytest.fixture(scope="module")
def registry(imdb_sample: Path, tmp_path_factory: pytest.TempPathFactory) -> Registry:
    return make_registry(imdb_sample, tmp_path_factory.mktemp("open-inference"))


@pytest.fixture(scope="module")
def api(registry: Registry) -> Iterator[ApiServer]:
    server = start_api(registry.tracking_uri, registry.workdir, max_text_chars="200")
    yield server
    assert server.terminate() == 0


@pytest.fixture
def client(api: ApiServer) -> Iterator[triton.InferenceServerClient]:
    client = triton.InferenceServerClient(url=f"{HOST}:{api.port}")
    yield client
    client.close()


def text_input(texts: list[str]) -> triton.InferInput:
    tensor = triton.InferInput("text", [len(texts)], "BYTES")
    tensor.set_data_from_numpy(np.array(texts, dtype=np.object_), binary_data=False)
    return tensor


def number_input() -> triton.InferInput:
    tensor = triton.InferInput("text", [1], "FP32")
    tensor.set_data_from_numpy(np.array([1.5], dtype=np.float32), binary_data=False)
    return tensor


def outputs(*names: str) -> list[triton.InferRequestedOutput]:
    return [triton.InferRequestedOutput(name, binary_data=False) for name in names]


def test_health_and_metadata(client: triton.InferenceServerClient) -> None:
    assert client.is_server_live() and client.is_server_ready()
    assert client.get_server_metadata()["name"] == "emotitrack"
    assert client.is_model_ready(MODEL) and client.is_model_ready(MODEL, "1")
    assert not client.is_model_ready(MODEL, "2") and not client.is_model_ready("other")
    metadata = client.get_model_metadata(MODEL)
    assert metadata == client.get_model_metadata(MODEL, "1")
    assert metadata["versions"] == ["1"]
    assert metadata["inputs"] == [{"name": "text", "datatype": "BYTES", "shape": [-1]}]
    assert [o["name"] for o in metadata["outputs"]] == list(OUTPUTS)


def test_infer_answers_as_predict_and_its_request_ids_take_feedback(
    client: triton.InferenceServerClient, api: ApiServer
) -> None:
    result = client.infer(MODEL, [text_input(TEXTS)], outputs=outputs(*OUTPUTS), request_id="r-1")
    response = result.get_response()
    assert (response["model_name"], response["model_version"], response["id"]) == (
        MODEL,
        "1",
        "r-1",
    )
    labels = [str(label) for label in result.as_numpy("label")]
    probabilities = result.as_numpy("probabilities")
    assert labels == ["positive", "negative"] and probabilities.shape == (2, 2)
    classes = result.get_output("probabilities")["parameters"]["classes"]
    assert classes == ["negative", "positive"]
    reference = httpx.post(f"{api.url}/predict/batch", json={"texts": TEXTS}).json()
    for row, expected in zip(probabilities, reference["predictions"], strict=True):
        assert row.tolist() == pytest.approx([expected["probabilities"][c] for c in classes])
    np.testing.assert_allclose(result.as_numpy("confidence"), probabilities.max(axis=1))
    request_ids = [str(r) for r in result.as_numpy("request_id")]
    for request_id in request_ids:
        stored = httpx.post(
            f"{api.url}/feedback", json={"request_id": request_id, "label": "positive"}
        )
        assert stored.status_code == 200, stored.text
    # counted under the route's template, not as "unmatched"
    counted = [
        series for series in api.scrape() if series.startswith("emotitrack_http_requests_total")
    ]
    assert any('route="/v2/models/{name}/infer"' in series for series in counted), counted
    assert not any('route="unmatched"' in series for series in counted), counted


def test_infer_by_version_and_chosen_outputs(client: triton.InferenceServerClient) -> None:
    result = client.infer(
        MODEL, [text_input(TEXTS[:1])], model_version="1", outputs=outputs("label")
    )
    assert [o["name"] for o in result.get_response()["outputs"]] == ["label"]
    everything = client.infer(MODEL, [text_input(TEXTS[:1])])  # no outputs named: all of them
    assert [o["name"] for o in everything.get_response()["outputs"]] == list(OUTPUTS)


@pytest.mark.parametrize(
    ("call", "status", "message"),
    [
        (lambda c: c.infer("other", [text_input(TEXTS)]), "404", "is not served"),
        (lambda c: c.infer(MODEL, [text_input(TEXTS)], model_version="7"), "404", "version 7"),
        (lambda c: c.get_model_metadata("other"), "404", "is not served"),
        (lambda c: c.infer(MODEL, [number_input()]), "400", "must be BYTES"),
        (
            lambda c: c.infer(MODEL, [text_input(TEXTS)], outputs=outputs("logits")),
            "400",
            "unknown outputs ['logits']",
        ),
        (lambda c: c.infer(MODEL, [text_input(["  "])]), "422", "empty or whitespace"),
        (lambda c: c.infer(MODEL, [text_input(["a" * 201])]), "422", "the limit is 200"),
    ],
)
def test_refusals_reach_the_client_with_their_status(
    client: triton.InferenceServerClient, call: object, status: str, message: str
) -> None:
    with pytest.raises(InferenceServerException) as refused:
        call(client)  # type: ignore[operator]
    assert refused.value.status() == status
    assert message in str(refused.value.message())


def test_binary_tensors_are_refused_with_a_way_out(client: triton.InferenceServerClient) -> None:
    tensor = triton.InferInput("text", [1], "BYTES")
    tensor.set_data_from_numpy(np.array(["Loved it!"], dtype=np.object_), binary_data=True)
    with pytest.raises(InferenceServerException) as refused:
        client.infer(MODEL, [tensor])
    assert refused.value.status() == "400" and "binary_data=False" in str(refused.value.message())


INFER = f"/v2/models/{MODEL}/infer"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b'{"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES"', "not valid JSON"),
        (b'{"inputs": []}', "body.inputs"),
        (
            b'{"inputs": [{"name": "text", "shape": [2], "datatype": "BYTES", "data": ["a"]}]}',
            "[2]",
        ),
        (b'{"inputs": [{"name": "txt", "shape": [1], "datatype": "BYTES", "data": ["a"]}]}', "txt"),
        (b'{"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": [3]}]}', "3"),
        (
            b'{"inputs": [{"name": "text", "shape": [1, 2], "datatype": "BYTES", '
            b'"data": [["a", "b"]]}]}',
            "[N, 1]",
        ),
    ],
)
def test_errors_are_the_protocols_json(api: ApiServer, body: bytes, message: str) -> None:
    answer = httpx.post(api.url + INFER, content=body, headers={"content-type": "application/json"})
    assert answer.status_code == 400
    assert set(answer.json()) == {"error"} and message in answer.json()["error"]


def test_nested_data_and_other_routes_keep_their_own_errors(api: ApiServer) -> None:
    tensor = {"name": "text", "shape": [2, 1], "datatype": "BYTES", "data": [["a b"], ["c"]]}
    nested = {"inputs": [tensor]}
    answer = httpx.post(api.url + INFER, json=nested)
    assert answer.status_code == 200 and answer.json()["outputs"][0]["shape"] == [2]
    assert set(httpx.post(f"{api.url}/predict", json={}).json()) == {"detail", "errors"}
    assert httpx.get(f"{api.url}/v2").json()["extensions"] == []


def test_infer_needs_an_api_key_when_keys_are_set(registry: Registry) -> None:
    """Infer sees texts and writes the log, as /predict: keyed alike; health and metadata not."""
    server = start_api(registry.tracking_uri, registry.workdir, api_keys="k-open-inference")
    try:
        client = triton.InferenceServerClient(url=f"{HOST}:{server.port}")
        assert client.is_server_ready() and client.get_model_metadata(MODEL)["name"] == MODEL
        for version in ("", "1"):
            with pytest.raises(InferenceServerException) as refused:
                client.infer(MODEL, [text_input(TEXTS)], model_version=version)
            assert refused.value.status() == "401"
            keyed = client.infer(
                MODEL,
                [text_input(TEXTS)],
                model_version=version,
                headers={"Authorization": "Bearer k-open-inference"},
            )
            assert [str(label) for label in keyed.as_numpy("label")] == ["positive", "negative"]
        client.close()
        schema = httpx.get(f"{server.url}/openapi.json").json()["paths"]
        assert "security" in schema["/v2/models/{name}/infer"]["post"]
        assert "security" not in schema["/v2/models/{name}"]["get"]
    finally:
        server.terminate()
        server.stop()


# The protocol's published REST specification (tests/fixtures/open_inference/README.md).
SPEC = Path(__file__).parents[1] / "fixtures" / "open_inference" / "open_inference_rest.yaml"


@pytest.fixture(scope="module")
def published() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(SPEC.read_text())
    assert document["openapi"].startswith("3.0")  # its schema objects: JSON Schema draft 4's
    return document


def conforms(published: dict[str, Any], schema: str, body: Any) -> list[str]:
    """What is wrong with ``body`` as the specification's ``schema`` (its refs resolved)."""
    validator = jsonschema.Draft4Validator(
        {"$ref": f"#/components/schemas/{schema}", "components": published["components"]}
    )
    return [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(body)
    ]


def test_answers_conform_to_the_published_specification(
    api: ApiServer, published: dict[str, Any]
) -> None:
    v2 = f"{api.url}/v2"
    tensor = {"name": "text", "shape": [2], "datatype": "BYTES", "data": TEXTS}
    answers = {
        "metadata_server_response": [httpx.get(v2)],
        "metadata_model_response": [
            httpx.get(f"{v2}/models/{MODEL}"),
            httpx.get(f"{v2}/models/{MODEL}/versions/1"),
        ],
        "inference_response": [
            httpx.post(f"{v2}/models/{MODEL}/infer", json={"inputs": [tensor]}),
            httpx.post(
                f"{v2}/models/{MODEL}/versions/1/infer",
                json={"id": "r-7", "inputs": [tensor], "outputs": [{"name": "probabilities"}]},
            ),
        ],
        "metadata_model_error_response": [
            httpx.get(f"{v2}/models/other"),
            httpx.get(f"{v2}/models/{MODEL}/versions/7"),
        ],
        "inference_error_response": [
            httpx.post(f"{v2}/models/other/infer", json={"inputs": [tensor]}),
            httpx.post(f"{v2}/models/{MODEL}/infer", json={"inputs": []}),
            httpx.post(f"{v2}/models/{MODEL}/infer", content=b"{", headers=JSON),
            httpx.post(f"{v2}/models/{MODEL}/infer", json={"inputs": [{**tensor, "shape": [3]}]}),
            httpx.post(
                f"{v2}/models/{MODEL}/infer",
                json={"inputs": [{**tensor, "shape": [1], "data": [" "]}]},
            ),
        ],
    }
    for schema, responses in answers.items():
        for response in responses:
            expected_ok = not schema.endswith("error_response")
            assert response.is_success == expected_ok, (schema, response.text)
            body = response.json()
            assert conforms(published, schema, body) == [], (schema, body)
    for status in ("live", "ready"):  # the specification defines their status only
        assert httpx.get(f"{v2}/health/{status}").status_code == 200


def test_the_documented_request_conforms_to_the_published_specification(
    api: ApiServer, published: dict[str, Any]
) -> None:
    document = httpx.get(f"{api.url}/openapi.json").json()
    for path in ("/v2/models/{name}/infer", "/v2/models/{name}/versions/{version}/infer"):
        content = document["paths"][path]["post"]["requestBody"]["content"]["application/json"]
        assert conforms(published, "inference_request", content["example"]) == []
        # what the server documents is a narrowing of the protocol's request
        assert content["schema"]["required"] == ["inputs"]


def test_the_specification_check_can_fail(published: dict[str, Any]) -> None:
    """Bodies the specification refuses are refused here, so the checks above can fail."""
    assert conforms(published, "inference_response", {"outputs": []})  # no model_name
    tensor = {"name": "label", "shape": ["2"], "datatype": "BYTES", "data": ["a", "b"]}
    assert conforms(published, "inference_response", {"model_name": "m", "outputs": [tensor]})
    assert conforms(published, "metadata_server_response", {"name": "x", "version": "1"})
    assert conforms(published, "inference_error_response", {"error": 3})
