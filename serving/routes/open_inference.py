"""The Open Inference Protocol (V2, as KServe, MLServer and Triton speak it): health, metadata
and ``/v2/models/{name}[/versions/{version}]/infer``, so their clients can call EmotiTrack.

One input, ``text``: ``BYTES``, shape ``[N]`` (or ``[N, 1]``). Outputs: ``label`` (BYTES),
``confidence`` (FP64), ``probabilities`` (FP64, ``[N, classes]``, the classes in the output's
parameters) and ``request_id`` (BYTES, for ``POST /feedback``). Errors are ``{"error": ...}``.
Tensors travel as JSON: the binary tensor extension is refused with a 400."""

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute

from serving import VERSION
from serving.deps import ServiceDep
from serving.errors import InvalidInferenceRequest
from serving.http_errors import Protocol
from serving.model_store import LoadedModel
from serving.responses import OPEN_INFERENCE_ERRORS, OrjsonResponse
from serving.schemas import (
    InferenceRequest,
    InferenceResponse,
    Liveness,
    MetadataTensor,
    ModelMetadata,
    ModelReadiness,
    ServerMetadata,
    ServerReadiness,
)
from serving.service import Service


class OpenInferenceRoute(APIRoute):
    """Errors get the protocol's body, even those raised before any dependency runs (a body
    that is not JSON); a body sent without a Content-Type is read as JSON: the protocol's
    clients (tritonclient) send none, and FastAPI would not parse it."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handle = super().get_route_handler()

        async def handle_as_json(request: Request) -> Response:
            request.state.protocol = Protocol.OPEN_INFERENCE  # in the scope the handlers see
            if BINARY_HEADER in request.headers:  # its body is not JSON: refused before parsing
                raise InvalidInferenceRequest(
                    "the binary tensor data extension is not supported; send tensors as JSON "
                    "(tritonclient: binary_data=False)"
                )
            if "content-type" not in request.headers:
                headers = [*request.scope["headers"], (b"content-type", b"application/json")]
                request = Request({**request.scope, "headers": headers}, request.receive)
            return await handle(request)

        return handle_as_json


router = APIRouter(
    prefix="/v2",
    tags=["Open Inference Protocol"],
    route_class=OpenInferenceRoute,
)
INPUT = "text"
OUTPUTS = ("label", "confidence", "probabilities", "request_id")
# Its spec: "200 indicates true and a 4xx status code indicates false".
NOT_READY = 400
BINARY_HEADER = "inference-header-content-length"


@router.get("", response_model=ServerMetadata, summary="Server metadata")
async def server_metadata() -> ServerMetadata:
    return ServerMetadata(name="emotitrack", version=VERSION, extensions=[])


@router.get("/health/live", response_model=Liveness, summary="Liveness: the process answers")
async def live() -> Liveness:
    return Liveness(live=True)


@router.get(
    "/health/ready",
    response_model=ServerReadiness,
    responses={NOT_READY: {"model": ServerReadiness, "description": "No model loaded yet."}},
    summary="Readiness: the model is loaded",
)
async def ready(service: ServiceDep) -> Response:
    is_ready = service.store.current is not None
    body = ServerReadiness(ready=is_ready).model_dump()
    return JSONResponse(body, status_code=200 if is_ready else NOT_READY)


@router.get(
    "/models/{name}",
    response_model=ModelMetadata,
    responses=OPEN_INFERENCE_ERRORS,
    summary="Model metadata",
)
async def model_metadata(name: str, service: ServiceDep) -> ModelMetadata:
    return metadata(service.served(name))


@router.get(
    "/models/{name}/versions/{version}",
    response_model=ModelMetadata,
    responses=OPEN_INFERENCE_ERRORS,
    summary="Model metadata of one version",
)
async def version_metadata(name: str, version: str, service: ServiceDep) -> ModelMetadata:
    return metadata(service.served(name, version))


@router.get(
    "/models/{name}/ready",
    response_model=ModelReadiness,
    responses=OPEN_INFERENCE_ERRORS,
    summary="Model readiness",
)
async def model_ready(name: str, service: ServiceDep) -> ModelReadiness:
    return ModelReadiness(name=service.served(name).name, ready=True)


@router.get(
    "/models/{name}/versions/{version}/ready",
    response_model=ModelReadiness,
    responses=OPEN_INFERENCE_ERRORS,
    summary="Model version readiness",
)
async def version_ready(name: str, version: str, service: ServiceDep) -> ModelReadiness:
    return ModelReadiness(name=service.served(name, version).name, ready=True)


@router.post(
    "/models/{name}/infer",
    response_model=InferenceResponse,
    responses=OPEN_INFERENCE_ERRORS,
    summary="Classify texts (a BYTES tensor)",
)
async def infer(name: str, body: InferenceRequest, service: ServiceDep) -> Response:
    return await _infer(service, body, name, None)


@router.post(
    "/models/{name}/versions/{version}/infer",
    response_model=InferenceResponse,
    responses=OPEN_INFERENCE_ERRORS,
    summary="Classify texts with one model version",
)
async def infer_version(
    name: str, version: str, body: InferenceRequest, service: ServiceDep
) -> Response:
    return await _infer(service, body, name, version)


async def _infer(
    service: Service, body: InferenceRequest, name: str, version: str | None
) -> Response:
    model = service.served(name, version)
    texts = input_texts(body)
    wanted = requested_outputs(body)
    service.check_texts(texts)
    model, predictions = await service.predict(texts, "v2-infer")
    outputs = output_tensors(model, predictions)
    answer: dict[str, Any] = {
        "model_name": model.name,
        "model_version": model.version,
        "outputs": [tensor for tensor in outputs if tensor["name"] in wanted],
    }
    if body.id is not None:
        answer["id"] = body.id
    return OrjsonResponse(answer)


def metadata(model: LoadedModel) -> ModelMetadata:
    classes = len(model.classes)
    return ModelMetadata(
        name=model.name,
        versions=[model.version],
        platform="emotitrack",
        inputs=[MetadataTensor(name=INPUT, datatype="BYTES", shape=[-1])],
        outputs=[
            MetadataTensor(name="label", datatype="BYTES", shape=[-1]),
            MetadataTensor(name="confidence", datatype="FP64", shape=[-1]),
            MetadataTensor(name="probabilities", datatype="FP64", shape=[-1, classes]),
            MetadataTensor(name="request_id", datatype="BYTES", shape=[-1]),
        ],
    )


def input_texts(body: InferenceRequest) -> list[str]:
    """The texts of the one ``text`` input, checked against its datatype and shape."""
    names = [tensor.name for tensor in body.inputs]
    if names != [INPUT]:
        raise InvalidInferenceRequest(f"expected one input named {INPUT!r}, got {names}")
    tensor = body.inputs[0]
    if tensor.datatype != "BYTES":
        raise InvalidInferenceRequest(f"input {INPUT!r} must be BYTES, got {tensor.datatype}")
    texts = flatten(tensor.data)
    if not (len(tensor.shape) in (1, 2) and tensor.shape[1:] in ([], [1])):
        raise InvalidInferenceRequest(f"input shape must be [N] or [N, 1], got {tensor.shape}")
    if tensor.shape[0] != len(texts):
        raise InvalidInferenceRequest(
            f"input shape {tensor.shape} does not match its {len(texts)} data elements"
        )
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise InvalidInferenceRequest(f"element {i}: expected a string, got {text!r:.40}")
    return texts


def flatten(data: list[Any]) -> list[Any]:
    """The protocol allows data flat or nested by shape (row-major)."""
    flat: list[Any] = []
    for item in data:
        flat.extend(flatten(item) if isinstance(item, list) else [item])
    return flat


def requested_outputs(body: InferenceRequest) -> set[str]:
    if body.outputs is None:
        return set(OUTPUTS)
    names = {output.name for output in body.outputs}
    unknown = sorted(names - set(OUTPUTS))
    if unknown:
        raise InvalidInferenceRequest(f"unknown outputs {unknown}; the model has {list(OUTPUTS)}")
    return names


def output_tensors(model: LoadedModel, predictions: list[dict[str, Any]]) -> list[dict[str, Any]]:
    n, classes = len(predictions), model.classes
    return [
        {
            "name": "label",
            "datatype": "BYTES",
            "shape": [n],
            "data": [p["sentiment"] for p in predictions],
        },
        {
            "name": "confidence",
            "datatype": "FP64",
            "shape": [n],
            "data": [p["confidence"] for p in predictions],
        },
        {
            "name": "probabilities",
            "datatype": "FP64",
            "shape": [n, len(classes)],
            "parameters": {"classes": list(classes)},
            "data": [p["probabilities"][c] for p in predictions for c in classes],
        },
        {
            "name": "request_id",
            "datatype": "BYTES",
            "shape": [n],
            "data": [p["request_id"] for p in predictions],
        },
    ]
