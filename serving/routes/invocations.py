"""``/invocations``: the payloads and answers of `mlflow models serve`, so its clients can switch
without changes."""

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from serving.deps import ServiceDep
from serving.invocations import texts_from_payload
from serving.responses import ERRORS, OrjsonResponse
from serving.schemas import InvocationsResponse

router = APIRouter()


@router.post(
    "/invocations",
    response_model=InvocationsResponse,
    responses=ERRORS,
    summary="MLflow scoring-server compatible predictions",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": {"type": "object"}},
                "text/csv": {"schema": {"type": "string"}},
            },
        }
    },
)
async def invocations(request: Request, service: ServiceDep) -> Response:
    body = await request.body()
    texts = texts_from_payload(body, request.headers.get("content-type", "application/json"))
    service.check_texts(texts)
    _, predictions = await service.predict(texts, "invocations")
    return OrjsonResponse(mlflow_answer(predictions))


def mlflow_answer(predictions: list[dict[str, Any]]) -> dict[str, Any]:
    """``mlflow models serve``'s rows (label, confidence, prob_<class>), and the request ids."""
    return {
        "predictions": [
            {"label": p["sentiment"], "confidence": p["confidence"]}
            | {f"prob_{k}": v for k, v in p["probabilities"].items()}
            for p in predictions
        ],
        # Beside the rows, not in them: the rows keep `mlflow models serve`'s columns.
        "request_ids": [p["request_id"] for p in predictions],
    }
