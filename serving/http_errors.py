"""How the API answers an error: the service's domain errors by ``serving.errors.HTTP_STATUS``,
and FastAPI's own refusals (body not JSON, invalid field) with a message that says what to fix.

``EXCEPTION_HANDLERS`` is given to the app once, when it is built."""

from __future__ import annotations

import email.message
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException

from serving.errors import HTTP_STATUS, ServingError

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


async def domain_error(request: Request, exc: ServingError) -> Response:
    """The status of the error's own class; an unmapped one fails here (KeyError: a 500)."""
    return JSONResponse({"detail": str(exc)}, status_code=HTTP_STATUS[type(exc)])


async def http_error(request: Request, exc: HTTPException) -> Response:
    if exc.status_code == 400 and exc.detail == FASTAPI_BODY_PARSE_ERROR:
        exc = HTTPException(400, detail=BODY_PARSE_PROBLEM)
    return await http_exception_handler(request, exc)


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
    if request.method == "POST" and not is_json_media_type(content_type):
        return JSONResponse(
            {
                "detail": "send JSON with Content-Type: application/json "
                f"(got {content_type or 'none'})"
            },
            status_code=415,
        )
    if any(e["type"] == "json_invalid" for e in errors):
        return JSONResponse(
            {"detail": "request body is not valid JSON", "errors": errors}, status_code=400
        )
    summary = "; ".join(f"{e['field']}: {e['problem']}" for e in errors)
    return JSONResponse(
        {"detail": f"invalid request: {summary}", "errors": errors}, status_code=422
    )


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
