"""``/feedback``: the true label of a logged prediction."""

import copy
from typing import Any

from fastapi import APIRouter, FastAPI

from serving.deps import ServiceDep
from serving.responses import ERRORS
from serving.schemas import ErrorResponse, FeedbackRequest, FeedbackResponse

router = APIRouter()


@router.post(
    "/feedback",
    response_model=FeedbackResponse,
    responses={
        404: {"model": ErrorResponse, "description": "Unknown request_id."},
        409: {
            "model": ErrorResponse,
            "description": "Feedback for this request_id exists already.",
        },
        **ERRORS,
    },
    summary="Store the true label of a logged prediction",
)
async def feedback(body: FeedbackRequest, service: ServiceDep) -> FeedbackResponse:
    await service.add_feedback(body.request_id, body.label)
    return FeedbackResponse(request_id=body.request_id, label=body.label)


def document_labels(app: FastAPI) -> None:
    """The OpenAPI document names the labels ``/feedback`` accepts: the loaded model's classes
    (an enum that follows the model; without a model, any non-empty string is documented)."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        schema = build()  # built once; the classes go into a copy per request
        service = getattr(app.state, "service", None)
        model = service.store.current if service is not None else None
        if model is None:
            return schema
        schema = copy.deepcopy(schema)
        label = schema["components"]["schemas"]["FeedbackRequest"]["properties"]["label"]
        label["enum"] = list(model.classes)
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
