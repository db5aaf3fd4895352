"""What the routes answer besides their response models: the error responses OpenAPI documents,
and a JSON response serialised by orjson."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi.responses import Response

from serving.schemas import ErrorResponse, MlflowErrorResponse, OpenInferenceError

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


# The MLflow scoring routes' refusals: its error body, its statuses (415 as MLflow for a
# charset other than UTF-8; the body guards' 408/413 keep EmotiTrack's body).
MLFLOW_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {
        "model": MlflowErrorResponse,
        "description": "Not a known payload (BAD_REQUEST), or rows without a text column, a "
        "cell that is not a string, params of the wrong type (INVALID_PARAMETER_VALUE).",
    },
    408: ERRORS[408],
    413: ERRORS[413],
    415: {
        "model": MlflowErrorResponse,
        "description": "Content-Type with a charset other than UTF-8 or unknown parameters.",
    },
    422: {
        "model": MlflowErrorResponse,
        "description": "A text empty, with NUL or too long, or too many texts.",
    },
    503: {
        "model": MlflowErrorResponse,
        "description": "No model loaded yet (TEMPORARILY_UNAVAILABLE).",
    },
}

# The Open Inference Protocol's refusals: {"error": ...} (the body guards' 408/413 keep
# EmotiTrack's body, as on the MLflow routes).
OPEN_INFERENCE_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": OpenInferenceError, "description": "Malformed or invalid inference request."},
    404: {"model": OpenInferenceError, "description": "No such model or version served."},
    408: ERRORS[408],
    413: ERRORS[413],
    415: {"model": OpenInferenceError, "description": "Body sent without JSON Content-Type."},
    422: {"model": OpenInferenceError, "description": "A text empty, with NUL or too long."},
    503: {"model": OpenInferenceError, "description": "No model loaded yet."},
}


def linked_to_feedback(request_id: str) -> dict[str, Any]:
    """A 200 answer's OpenAPI link to ``POST /feedback`` with the request id found at the JSON
    pointer ``request_id`` (clients and the stateful fuzzer follow it)."""
    return {
        "links": {
            "Feedback": {
                "operationId": "feedback_feedback_post",
                "requestBody": {"request_id": f"$response.body#{request_id}"},
                "description": "Store the true label of this prediction.",
            }
        }
    }


class OrjsonResponse(Response):
    """JSON serialised by orjson, the body already in its documented shape (FastAPI passes a
    returned Response through; the route's response_model still documents it)."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)
