"""``/feedback``: the true label of a logged prediction."""

from fastapi import APIRouter

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
