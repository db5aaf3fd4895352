"""Classify one text or a batch: ``/predict`` and ``/predict/batch``.

Their request models carry the configured limits (so OpenAPI states what the server accepts),
and so exist per app: ``router(settings)`` binds them to the endpoints below."""

import functools
import inspect
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter
from fastapi.responses import Response
from pydantic import BaseModel

from serving.deps import ServiceDep
from serving.responses import ERRORS, OrjsonResponse, linked_to_feedback
from serving.schemas import BatchRequest, BatchResponse, Prediction, PredictRequest, request_models
from serving.settings import ServingSettings

Endpoint = Callable[..., Awaitable[Response]]


async def predict(body: PredictRequest, service: ServiceDep) -> Response:
    _, predictions = await service.predict([body.text], "predict", explain=body.explain)
    return OrjsonResponse(predictions[0])


async def predict_batch(body: BatchRequest, service: ServiceDep) -> Response:
    model, predictions = await service.predict(body.texts, "batch")
    return OrjsonResponse({"predictions": predictions, "model_version": model.version})


def router(settings: ServingSettings) -> APIRouter:
    configured_predict, configured_batch = request_models(
        settings.max_text_chars, settings.max_batch_texts
    )
    routes = APIRouter()
    routes.add_api_route(
        "/predict",
        reading_body_as(configured_predict, predict),
        methods=["POST"],
        response_model=Prediction,
        responses={200: linked_to_feedback("/request_id"), **ERRORS},
        summary="Classify one text",
    )
    routes.add_api_route(
        "/predict/batch",
        reading_body_as(configured_batch, predict_batch),
        methods=["POST"],
        response_model=BatchResponse,
        responses={200: linked_to_feedback("/predictions/0/request_id"), **ERRORS},
        summary="Classify many texts",
    )
    return routes


def reading_body_as(model: type[BaseModel], endpoint: Endpoint) -> Endpoint:
    """``endpoint`` as FastAPI should see it: its ``body`` validated (and documented) as
    ``model``, a subclass of the type it declares."""

    @functools.wraps(endpoint)
    async def bound(*args: Any, **kwargs: Any) -> Response:
        return await endpoint(*args, **kwargs)

    signature = inspect.signature(endpoint, eval_str=True)
    parameters = [
        p.replace(annotation=model) if p.name == "body" else p
        for p in signature.parameters.values()
    ]
    vars(bound)["__signature__"] = signature.replace(parameters=parameters)  # what inspect reads
    return bound
