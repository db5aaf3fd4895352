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

# CSV as documented: a text header, then one text per line (no quotes, commas or blank lines),
# each at most {chars} characters, at most {rows} of them (the lookahead bounds a line's length).
CSV_LINE = r'(?=[^\r\n]{{1,{chars}}}(?:\r?\n|$))[^\r\n",\x00]*[^\s",\x00\x1c-\x1f][^\r\n",\x00]*'
CSV_PATTERN = r"^text(?:\r?\n" + CSV_LINE + r"){{0,{rows}}}(?:\r?\n)?$"


def csv_pattern(settings: ServingSettings) -> str:
    """The CSV bodies every reader agrees on; the server reads any CSV with a text column."""
    return CSV_PATTERN.format(chars=settings.max_text_chars, rows=settings.max_batch_texts)


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
    """The payloads as the server reads them, with the configured limits. Two rules of
    ``dataframe_split`` JSON Schema cannot state are in its description: a row has one cell per
    column, the one under ``text`` a text; an ``index`` has one entry per row."""
    most = settings.max_batch_texts
    text = {
        "type": "string",
        "minLength": 1,
        "maxLength": settings.max_text_chars,
        "pattern": CLASSIFIABLE_TEXT,
        "description": "Not blank, no NUL.",
    }
    record = {
        "type": "object",
        "required": ["text"],
        "properties": {"text": text},
        "description": "A row: its text, other columns ignored.",
    }
    rows = {"type": "array", "items": {"anyOf": [text, record]}, "maxItems": most}
    texts_or_columns = {
        "anyOf": [
            rows,
            {
                "type": "object",
                "required": ["text"],
                "properties": {"text": {"anyOf": [rows, text]}},
                "description": "Columns: the text column's rows (other columns ignored).",
            },
        ]
    }
    params = {
        "type": ["object", "null"],
        "properties": {"explain": {"type": "boolean", "description": "Add an explanation column."}},
    }
    formats = {
        "dataframe_split": {
            "type": "object",
            "required": ["data"],
            "description": "Each row has one cell per column, the one under the first text "
            "column a text (without columns: rows of one text); the index, one entry per row.",
            "properties": {
                "columns": {
                    "type": ["array", "null"],
                    "items": {"type": "string"},
                    "contains": {"const": "text"},
                },
                "data": {
                    "type": "array",
                    "items": {"type": "array", "minItems": 1},
                    "maxItems": most,
                },
                "index": {"type": ["array", "null"]},
            },
            "additionalProperties": False,
        },
        "dataframe_records": {"type": "array", "items": record, "maxItems": most},
        "instances": texts_or_columns,
        "inputs": texts_or_columns,
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
        "pattern": csv_pattern(settings),
    }
    return {
        "required": True,
        "content": {
            "application/json": {"schema": json_payload, "examples": JSON_EXAMPLES},
            "text/csv": {
                "schema": csv_payload,
                "example": "text\nLoved it!\nDull and far too long.\n",
            },
        },
    }


# One per format, as MLflow's scoring-server documentation shows them.
JSON_EXAMPLES = {
    "dataframe_split": {
        "value": {"dataframe_split": {"columns": ["text"], "data": [["Loved it!"], ["Awful."]]}}
    },
    "dataframe_records": {"value": {"dataframe_records": [{"text": "Loved it!"}]}},
    "instances": {"value": {"instances": ["Loved it!", "Awful."]}},
    "inputs with params": {
        "value": {"inputs": {"text": ["Loved it!"]}, "params": {"explain": True}}
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
