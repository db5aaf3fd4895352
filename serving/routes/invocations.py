"""MLflow's scoring protocol: ``/invocations``, ``/ping`` and ``/version`` answer as `mlflow
models serve` does (payloads, params, rows, error bodies), so its clients can switch without
changes. ``/health`` stays EmotiTrack's (serving.routes.health)."""

import json
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import PlainTextResponse, Response
from mlflow.version import VERSION as MLFLOW_VERSION  # the serving profile has mlflow-skinny

from serving.deps import ServiceDep, speaks
from serving.http_errors import Protocol
from serving.invocations import read_invocation
from serving.responses import MLFLOW_ERRORS, OrjsonResponse
from serving.schemas import CLASSIFIABLE_TEXT, InvocationsResponse
from serving.settings import ServingSettings

# The plainest CSV: a text header, then one text per line (no quotes, commas or blank lines).
# The server reads any CSV with a text column; these are the bodies every reader agrees on.
CSV_PATTERN = r'^text(?:\r?\n[^\r\n",\x00]*[^\s",\x00\x1c-\x1f][^\r\n",\x00]*)*(?:\r?\n)?$'


async def invocations(request: Request, service: ServiceDep) -> Response:
    invocation = read_invocation(await request.body(), request.headers.get("content-type", ""))
    if not invocation.texts:  # no rows, no predictions: as MLflow, once a model is there
        service.model()
        return OrjsonResponse({"predictions": [], "request_ids": []})
    service.check_texts(invocation.texts)
    _, predictions = await service.predict(
        invocation.texts, "invocations", explain=invocation.explain
    )
    return OrjsonResponse(mlflow_answer(predictions))


async def ping(service: ServiceDep) -> Response:
    service.model()
    # MLflow answers a newline labelled JSON; the label is left out here: it is not JSON
    return PlainTextResponse("\n")


async def version() -> Response:
    return PlainTextResponse(MLFLOW_VERSION)


def router(settings: ServingSettings) -> APIRouter:
    routes = APIRouter(dependencies=[speaks(Protocol.MLFLOW)], tags=["MLflow scoring protocol"])
    routes.add_api_route(
        "/invocations",
        invocations,
        methods=["POST"],
        response_model=InvocationsResponse,
        responses=MLFLOW_ERRORS,
        summary="MLflow scoring-server compatible predictions",
        openapi_extra={"requestBody": request_body(settings)},
    )
    routes.add_api_route(
        "/ping",
        ping,
        methods=["GET"],
        response_class=PlainTextResponse,
        responses={503: MLFLOW_ERRORS[503]},
        summary="MLflow's readiness probe: 200 once a model is loaded",
    )
    routes.add_api_route(
        "/version",
        version,
        methods=["GET"],
        response_class=PlainTextResponse,
        summary="The MLflow version this server speaks the scoring protocol of",
    )
    return routes


def request_body(settings: ServingSettings) -> dict[str, Any]:
    """The payloads as documented: each format in its plainest shape, with the configured
    limits. The server reads a few more shapes (other columns beside ``text``, ``instances``
    as records), as MLflow does."""
    text = {
        "type": "string",
        "minLength": 1,
        "maxLength": settings.max_text_chars,
        "pattern": CLASSIFIABLE_TEXT,
        "description": "Not blank, no NUL.",
    }
    texts = {"type": "array", "items": text, "maxItems": settings.max_batch_texts}
    params = {
        "type": ["object", "null"],
        "properties": {"explain": {"type": "boolean", "description": "Add an explanation column."}},
    }
    formats = {
        "dataframe_split": {
            "type": "object",
            "required": ["data"],  # without columns, the one column is the text
            "properties": {
                "index": {"type": "array", "description": "One entry per row of data."},
                "columns": {
                    "type": "array",
                    "items": {"const": "text"},
                    "minItems": 1,
                    "maxItems": 1,
                },
                "data": {
                    "type": "array",
                    "items": {"type": "array", "items": text, "minItems": 1, "maxItems": 1},
                    "maxItems": settings.max_batch_texts,
                },
            },
            "additionalProperties": False,
        },
        "dataframe_records": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["text"],
                "properties": {"text": text},
            },
            "maxItems": settings.max_batch_texts,
        },
        "instances": texts,
        "inputs": {
            "oneOf": [
                texts,
                {
                    "type": "object",
                    "required": ["text"],
                    "properties": {"text": {"oneOf": [texts, text]}},
                },
            ]
        },
    }
    json_payload = {
        "oneOf": [
            {
                "type": "object",
                "required": [name],
                "properties": {name: schema, "params": params},
                # other keys are ignored, as by MLflow; a second format is refused
                "not": {"anyOf": [{"required": [other]} for other in formats if other != name]},
            }
            for name, schema in formats.items()
        ],
        "description": 'One of the formats of `mlflow models serve`, optionally with "params".',
    }
    csv_payload = {
        "type": "string",
        "description": "CSV: a text header, then one text per line. (Any CSV with a text "
        "column is read, as by MLflow; an empty body is refused.)",
        "pattern": CSV_PATTERN,
    }
    return {
        "required": True,
        "content": {
            "application/json": {"schema": json_payload},
            "text/csv": {"schema": csv_payload},
        },
    }


def mlflow_answer(predictions: list[dict[str, Any]]) -> dict[str, Any]:
    """``mlflow models serve``'s rows (label, confidence, prob_<class>, and with params.explain
    the explanation as the pyfunc's JSON string), and the request ids."""
    rows = []
    for p in predictions:
        row = {"label": p["sentiment"], "confidence": p["confidence"]}
        row |= {f"prob_{k}": v for k, v in p["probabilities"].items()}
        if "explanation" in p:
            row["explanation"] = json.dumps(p["explanation"])  # as the pyfunc writes it
        rows.append(row)
    # Beside the rows, not in them: the rows keep `mlflow models serve`'s columns.
    return {"predictions": rows, "request_ids": [p["request_id"] for p in predictions]}
