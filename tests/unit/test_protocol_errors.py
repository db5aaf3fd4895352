"""Each protocol's error body from the one status table: MLflow's on its scoring routes, the Open
Inference Protocol's on /v2, EmotiTrack's elsewhere; every domain error has an MLflow code."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import httpx
import pytest

from serving import errors
from serving.app import create_app
from serving.deps import speaks
from serving.errors import HTTP_STATUS, MLFLOW_ERROR_CODE, ServingError
from serving.http_errors import Protocol
from serving.metrics import build_metrics
from serving.settings import ServingSettings

# the codes mlflow.protos.databricks_pb2 maps to these statuses (MlflowException)
MLFLOW_CODE_STATUS = {
    "BAD_REQUEST": {400, 415},
    "INVALID_PARAMETER_VALUE": {400, 422},
    "RESOURCE_DOES_NOT_EXIST": {404},
    "RESOURCE_ALREADY_EXISTS": {409},
    "TEMPORARILY_UNAVAILABLE": {503},
}


def test_every_domain_error_has_an_mlflow_code_that_fits_its_status() -> None:
    defined = {
        value
        for value in vars(errors).values()
        if isinstance(value, type) and issubclass(value, ServingError) and value is not ServingError
    }
    assert defined == MLFLOW_ERROR_CODE.keys() == HTTP_STATUS.keys()
    for error, code in MLFLOW_ERROR_CODE.items():
        assert HTTP_STATUS[error] in MLFLOW_CODE_STATUS[code], error.__name__


def fetch(
    protocol: Protocol | None, error: type[ServingError], path: str = "/fail"
) -> httpx.Response:
    app = create_app(ServingSettings(model_uri="models:/unused@production"))

    async def fail() -> None:
        raise error("what to do about it")

    dependencies = [speaks(protocol)] if protocol else None
    app.add_api_route(path, fail, methods=["POST"], dependencies=dependencies)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)

    async def post() -> httpx.Response:
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
            return await client.post(path)

    return asyncio.run(post())


@pytest.mark.parametrize("error", list(HTTP_STATUS), ids=lambda error: error.__name__)
def test_each_protocol_answers_a_domain_error_with_its_own_body(error: type[ServingError]) -> None:
    mlflow = fetch(Protocol.MLFLOW, error)
    assert mlflow.status_code == HTTP_STATUS[error]
    assert mlflow.json() == {
        "error_code": MLFLOW_ERROR_CODE[error],
        "message": "what to do about it",
        "detail": "what to do about it",
    }
    v2 = fetch(Protocol.OPEN_INFERENCE, error)
    assert (v2.status_code, v2.json()) == (HTTP_STATUS[error], {"error": "what to do about it"})
    plain = fetch(None, error)
    assert plain.json() == {"detail": "what to do about it"}


def test_the_real_routes_speak_their_protocols() -> None:
    """Refused before the service is asked (no lifespan: none is built), each route's refusal
    comes in its protocol's body."""
    app = create_app(ServingSettings(model_uri="models:/unused@production"))
    # what the middleware counts with; the routes never reach the service for these requests
    app.state.service = SimpleNamespace(metrics=build_metrics(), in_flight=0)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)

    async def calls() -> list[httpx.Response]:
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
            return [
                await client.post("/invocations", content=b"[1]"),
                await client.post("/v2/models/m/infer", content=b"{"),
                await client.post(
                    "/predict", content=b"{", headers={"content-type": "application/json"}
                ),
            ]

    invocations, infer, predict = asyncio.run(calls())
    assert invocations.status_code == 400 and invocations.json()["error_code"] == "BAD_REQUEST"
    assert infer.status_code == 400 and set(infer.json()) == {"error"}
    assert predict.status_code == 400 and "detail" in predict.json()


def test_infer_reads_json_only_and_refuses_it_in_the_protocols_body() -> None:
    """The infer routes read their body themselves: a non-JSON Content-Type is a 415, invalid
    fields a 400 naming them, both as {"error": ...}; no Content-Type is read as JSON."""
    app = create_app(ServingSettings(model_uri="models:/unused@production"))
    app.state.service = SimpleNamespace(metrics=build_metrics(), in_flight=0)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    tensor = b'{"inputs": [{"name": "text", "shape": ["1"], "datatype": "BYTES", "data": ["a"]}]}'

    async def calls() -> list[httpx.Response]:
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
            url = "/v2/models/m/versions/1/infer"
            return [
                await client.post(url, content=tensor, headers={"content-type": "text/plain"}),
                await client.post(url, content=tensor),
            ]

    plain, untyped = asyncio.run(calls())
    assert plain.status_code == 415 and set(plain.json()) == {"error"}
    assert "application/json" in plain.json()["error"]
    assert untyped.status_code == 400 and "body.inputs.0.shape.0" in untyped.json()["error"]
