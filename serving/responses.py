"""What the routes answer besides their response models: the error responses OpenAPI documents,
and a JSON response serialised by orjson."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi.responses import Response

from serving.schemas import ErrorResponse

ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorResponse, "description": "Malformed body (not JSON, not a known payload)."},
    408: {
        "model": ErrorResponse,
        "description": "Body not received within EMOTITRACK_REQUEST_TIMEOUT_S.",
    },
    413: {"model": ErrorResponse, "description": "Body larger than the configured limit."},
    415: {
        "model": ErrorResponse,
        "description": "Body sent without Content-Type: application/json.",
    },
    422: {
        "model": ErrorResponse,
        "description": "Invalid field: wrong type, empty or too long text, too many texts.",
    },
    503: {
        "model": ErrorResponse,
        "description": "No model loaded yet (none promoted, or registry down), or the request "
        "was not answered within EMOTITRACK_REQUEST_TIMEOUT_S.",
    },
}


class OrjsonResponse(Response):
    """JSON serialised by orjson, the body already in its documented shape (FastAPI passes a
    returned Response through; the route's response_model still documents it)."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)
