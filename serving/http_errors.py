"""How the API answers an error: the service's domain errors by ``serving.errors.HTTP_STATUS``,
and FastAPI's own refusals (body not JSON, invalid field) with a message that says what to fix.

The body is the protocol's that the route speaks (``serving.deps.speaks``): ``{"detail": ...}``
by default, MLflow's ``{"error_code": ..., "message": ...}`` on its scoring routes, and the Open
Inference Protocol's ``{"error": ...}`` on ``/v2``. ``EXCEPTION_HANDLERS`` is given to the app
once, when it is built."""

from __future__ import annotations

import email.message
from collections.abc import Callable, Coroutine
from enum import StrEnum
from typing import Any

from fastapi import Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException

from serving.errors import HTTP_STATUS, MLFLOW_ERROR_CODE, ServingError


class Protocol(StrEnum):
    """Whose error body a route answers with."""

    EMOTITRACK = "emotitrack"
    MLFLOW = "mlflow"
    OPEN_INFERENCE = "open-inference"


# What FastAPI answers when the JSON parser fails with anything but a syntax error: invalid
# UTF-8, nesting past the recursion limit, an integer over Python's 4,300 digits.
FASTAPI_BODY_PARSE_ERROR = "There was an error parsing the body"
BODY_PARSE_PROBLEM = (
    "request body could not be parsed: not valid UTF-8 JSON, nested too deeply, or a number "
    'too long; send a JSON object such as {"text": "..."}'
)

# How to fix an empty or malformed field, by field name (texts: the default).
FIELD_FIXES = {
    "request_id": "not a request_id; send the 32 lowercase hex characters a prediction "
    "returned as request_id",
    "label": "empty; send the true label, one of the served model's classes (GET /model)",
}


def protocol_of(request: Request) -> Protocol:
    protocol: Protocol = getattr(request.state, "protocol", Protocol.EMOTITRACK)
    return protocol


def error_body(protocol: Protocol, message: str, mlflow_code: str) -> dict[str, Any]:
    if protocol is Protocol.MLFLOW:
        # "detail": EmotiTrack's own key, kept for the clients written against it before
        return {"error_code": mlflow_code, "message": message, "detail": message}
    if protocol is Protocol.OPEN_INFERENCE:
        return {"error": message}
    return {"detail": message}


async def domain_error(request: Request, exc: ServingError) -> Response:
    """The status of the error's own class; an unmapped one fails here (KeyError: a 500)."""
    status = HTTP_STATUS[type(exc)]
    body = error_body(protocol_of(request), str(exc), MLFLOW_ERROR_CODE[type(exc)])
    return JSONResponse(body, status_code=status)


async def http_error(request: Request, exc: HTTPException) -> Response:
    if exc.status_code == 400 and exc.detail == FASTAPI_BODY_PARSE_ERROR:
        exc = HTTPException(400, detail=BODY_PARSE_PROBLEM)
    protocol = protocol_of(request)
    if protocol is Protocol.EMOTITRACK:
        return await http_exception_handler(request, exc)
    code = "BAD_REQUEST" if exc.status_code < 500 else "INTERNAL_ERROR"
    return JSONResponse(
        error_body(protocol, str(exc.detail), code),
        status_code=exc.status_code,
        headers=getattr(exc, "headers", None),
    )


async def invalid_request(request: Request, exc: RequestValidationError) -> Response:
    errors = [
        {
            "field": ".".join(str(p) for p in e["loc"]),
            "problem": what_to_fix(e),
            "type": e["type"],
        }
        for e in exc.errors()
    ]
    content_type = request.headers.get("content-type", "")
    protocol = protocol_of(request)
    # the Open Inference routes read a body without a Content-Type as JSON (tritonclient)
    untyped_json = protocol is Protocol.OPEN_INFERENCE and not content_type
    if request.method == "POST" and not (untyped_json or is_json_media_type(content_type)):
        status = 415
        message = f"send JSON with Content-Type: application/json (got {content_type or 'none'})"
    elif any(e["type"] == "json_invalid" for e in errors):
        status, message = 400, "request body is not valid JSON"
    else:
        summary = "; ".join(f"{e['field']}: {e['problem']}" for e in errors)
        status, message = 422, f"invalid request: {summary}"
    if protocol is not Protocol.EMOTITRACK:  # the protocol's body: no room for "errors"
        # The Open Inference Protocol answers every refused request with a 400.
        body = error_body(protocol, message, "INVALID_PARAMETER_VALUE")
        return JSONResponse(body, status_code=400 if status == 422 else status)
    body = {"detail": message} if status == 415 else {"detail": message, "errors": errors}
    return JSONResponse(body, status_code=status)


def is_json_media_type(content_type: str) -> bool:
    """Whether FastAPI parses a body with this Content-Type as JSON, by its own rule:
    ``application/json`` or ``application/*+json``, any case, parameters aside."""
    message = email.message.Message()
    message["content-type"] = content_type
    subtype = message.get_content_subtype()
    return (
        bool(content_type)
        and message.get_content_maintype() == "application"
        and (subtype == "json" or subtype.endswith("+json"))
    )


def what_to_fix(error: Any) -> str:
    """Pydantic's message, or one that says how to fix the request for the limits we set."""
    kind, ctx, given = error["type"], error.get("ctx") or {}, error.get("input")
    field = next((part for part in reversed(error["loc"]) if isinstance(part, str)), "")
    if kind.startswith("string_") and field in FIELD_FIXES:
        return FIELD_FIXES[field]
    if kind == "string_too_short":
        return "empty or whitespace; send the text to classify"
    if kind == "string_too_long" and isinstance(given, str):
        return f"{len(given)} characters; the limit is {ctx.get('max_length')}"
    if kind == "too_long" and isinstance(given, list):
        return f"{len(given)} texts; at most {ctx.get('max_length')} per request, split the batch"
    if kind == "too_short" and isinstance(given, list):
        return "send at least one text"
    if kind == "value_error" and "error" in ctx:  # our validators' messages, without a prefix
        return str(ctx["error"])
    return str(error["msg"])


Handler = Callable[[Request, Any], Coroutine[Any, Any, Response]]
EXCEPTION_HANDLERS: dict[int | type[Exception], Handler] = {
    ServingError: domain_error,
    HTTPException: http_error,
    RequestValidationError: invalid_request,
}
