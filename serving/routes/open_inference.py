"""The Open Inference Protocol (V2, as KServe, MLServer and Triton speak it): health, metadata
and ``/v2/models/{name}[/versions/{version}]/infer``, so their clients can call EmotiTrack.

One input, ``text``: ``BYTES``, shape ``[N]`` (or ``[N, 1]``). Outputs: ``label`` (BYTES),
``confidence`` (FP64), ``probabilities`` (FP64, ``[N, classes]``, the classes in the output's
parameters) and ``request_id`` (BYTES, for ``POST /feedback``). Errors are ``{"error": ...}``.
Tensors travel as JSON: the binary tensor extension is refused with a 400.

The OpenAPI document states exactly what the server accepts (the served model's name, the
input's name, datatype and shapes, the configured limits); the one rule JSON Schema cannot
state, ``shape[0]`` equal to the number of texts, is in the request body's description."""

import functools
import inspect
from collections.abc import Awaitable, Callable, Coroutine
from typing import Annotated, Any

from fastapi import APIRouter, Path, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from pydantic import ValidationError

from serving import VERSION
from serving.deps import ServiceDep
from serving.errors import InvalidInferenceRequest, UnsupportedMediaType
from serving.http_errors import Protocol, is_json_media_type
from serving.model_store import LoadedModel
from serving.responses import OPEN_INFERENCE_ERRORS, OrjsonResponse
from serving.schemas import (
    CLASSIFIABLE_TEXT,
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
from serving.settings import ServingSettings


class OpenInferenceRoute(APIRoute):
    """Errors get the protocol's body, even those raised before any dependency runs; a body
    sent without a Content-Type is read as JSON: the protocol's clients (tritonclient) send
    none."""

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


INPUT = "text"
OUTPUTS = ("label", "confidence", "probabilities", "request_id")
# Its spec: "200 indicates true and a 4xx status code indicates false".
NOT_READY = 400
BINARY_HEADER = "inference-header-content-length"
UNREGISTERED = "unregistered"  # serving.model_store's name for a model given by run or path
# The metadata names the served version: the routes that take a version follow that link.
VERSION_LINKS = {
    f"{what}OfThisVersion": {
        "operationId": operation,
        "parameters": {"name": "$response.body#/name", "version": "$response.body#/versions/0"},
    }
    for what, operation in (
        ("Metadata", "version_metadata_v2_models__name__versions__version__get"),
        ("Readiness", "version_ready_v2_models__name__versions__version__ready_get"),
        ("Inference", "infer_version_v2_models__name__versions__version__infer_post"),
    )
}
INFER_LINKS = {
    "InferenceOfThisVersion": {
        "operationId": "infer_version_v2_models__name__versions__version__infer_post",
        "parameters": {
            "name": "$response.body#/model_name",
            "version": "$response.body#/model_version",
        },
    }
}


async def server_metadata() -> ServerMetadata:
    return ServerMetadata(name="emotitrack", version=VERSION, extensions=[])


async def live() -> Liveness:
    return Liveness(live=True)


async def ready(service: ServiceDep) -> Response:
    is_ready = service.store.current is not None
    body = ServerReadiness(ready=is_ready).model_dump()
    return JSONResponse(body, status_code=200 if is_ready else NOT_READY)


async def model_metadata(name: str, service: ServiceDep) -> ModelMetadata:
    return metadata(service.served(name))


async def version_metadata(name: str, version: str, service: ServiceDep) -> ModelMetadata:
    return metadata(service.served(name, version))


async def model_ready(name: str, service: ServiceDep) -> ModelReadiness:
    return ModelReadiness(name=service.served(name).name, ready=True)


async def version_ready(name: str, version: str, service: ServiceDep) -> ModelReadiness:
    return ModelReadiness(name=service.served(name, version).name, ready=True)


async def infer(name: str, request: Request, service: ServiceDep) -> Response:
    return await _infer(service, await read_request(request), name, None)


async def infer_version(name: str, version: str, request: Request, service: ServiceDep) -> Response:
    return await _infer(service, await read_request(request), name, version)


def router(settings: ServingSettings) -> APIRouter:
    """The V2 routes; their OpenAPI names the served model and states the configured limits."""
    routes = APIRouter(
        prefix="/v2", tags=["Open Inference Protocol"], route_class=OpenInferenceRoute
    )
    routes.add_api_route(
        "", server_metadata, response_model=ServerMetadata, summary="Server metadata"
    )
    routes.add_api_route(
        "/health/live", live, response_model=Liveness, summary="Liveness: the process answers"
    )
    routes.add_api_route(
        "/health/ready",
        ready,
        response_model=ServerReadiness,
        responses={NOT_READY: {"model": ServerReadiness, "description": "No model loaded yet."}},
        summary="Readiness: the model is loaded",
    )
    name = Annotated[
        str, Path(description="The served model's name.", json_schema_extra=name_schema(settings))
    ]
    body = {"requestBody": inference_request_body(settings)}
    model_routes: list[tuple[str, Endpoint, type, str, dict[str, Any]]] = [
        ("/models/{name}", model_metadata, ModelMetadata, "Model metadata", VERSION_LINKS),
        (
            "/models/{name}/versions/{version}",
            version_metadata,
            ModelMetadata,
            "Model metadata of one version",
            {},
        ),
        ("/models/{name}/ready", model_ready, ModelReadiness, "Model readiness", {}),
        (
            "/models/{name}/versions/{version}/ready",
            version_ready,
            ModelReadiness,
            "Model version readiness",
            {},
        ),
        (
            "/models/{name}/infer",
            infer,
            InferenceResponse,
            "Classify texts (a BYTES tensor)",
            INFER_LINKS,
        ),
        (
            "/models/{name}/versions/{version}/infer",
            infer_version,
            InferenceResponse,
            "Classify texts with one model version",
            {},
        ),
    ]
    for path, endpoint, model, summary, links in model_routes:
        inference = path.endswith("/infer")
        routes.add_api_route(
            path,
            with_name_as(name, endpoint),
            methods=["POST" if inference else "GET"],
            response_model=model,
            responses={**({200: {"links": links}} if links else {}), **OPEN_INFERENCE_ERRORS},
            summary=summary,
            openapi_extra=body if inference else None,
        )
    return routes


Endpoint = Callable[..., Awaitable[Any]]


def with_name_as(name: Any, endpoint: Endpoint) -> Endpoint:
    """``endpoint`` as FastAPI should see it: its ``name`` path parameter documented by ``name``."""

    @functools.wraps(endpoint)
    async def bound(*args: Any, **kwargs: Any) -> Any:
        return await endpoint(*args, **kwargs)

    signature = inspect.signature(endpoint)
    parameters = [
        p.replace(annotation=name) if p.name == "name" else p for p in signature.parameters.values()
    ]
    vars(bound)["__signature__"] = signature.replace(parameters=parameters)  # what inspect reads
    return bound


def served_name(settings: ServingSettings) -> str:
    """The name the model store gives the model of ``settings.model_uri``."""
    uri = settings.model_uri
    if not uri.startswith("models:/"):
        return UNREGISTERED
    return uri.removeprefix("models:/").split("@", 1)[0].partition("/")[0]


def name_schema(settings: ServingSettings) -> dict[str, Any]:
    return {"enum": [served_name(settings)]}


def inference_request_body(settings: ServingSettings) -> dict[str, Any]:
    """The inference request as the server reads it: the protocol's object, narrowed to this
    model's one input and four outputs, with the configured limits."""
    most = settings.max_batch_texts
    text = {
        "type": "string",
        "minLength": 1,
        "maxLength": settings.max_text_chars,
        "pattern": CLASSIFIABLE_TEXT,
    }
    parameters = {"type": ["object", "null"]}
    tensor = {
        "type": "object",
        "required": ["name", "shape", "datatype", "data"],
        "properties": {
            "name": {"const": INPUT},
            "datatype": {"const": "BYTES"},
            "shape": {
                "type": "array",
                "description": "[N] or [N, 1]: N, the number of texts.",
                "prefixItems": [{"type": "integer", "minimum": 1, "maximum": most}, {"const": 1}],
                "minItems": 1,
                "maxItems": 2,
            },
            "parameters": parameters,
            "data": {
                "type": "array",
                "description": "The N texts, flat or as N rows of one text.",
                "items": {
                    "anyOf": [
                        text,
                        {"type": "array", "prefixItems": [text], "minItems": 1, "maxItems": 1},
                    ]
                },
                "minItems": 1,
                "maxItems": most,
            },
        },
    }
    request = {
        "type": "object",
        "required": ["inputs"],
        "description": "One input tensor, text (shape[0]: the number of texts in data).",
        "properties": {
            "id": {"type": ["string", "null"], "description": "Echoed in the response."},
            "parameters": parameters,
            "inputs": {"type": "array", "items": tensor, "minItems": 1, "maxItems": 1},
            "outputs": {
                "type": ["array", "null"],
                "description": "The outputs to return (default: all).",
                "items": {
                    "type": "object",
                    "required": ["name"],
                    "properties": {"name": {"enum": list(OUTPUTS)}, "parameters": parameters},
                },
            },
        },
    }
    example = {
        "id": "r1",
        "inputs": [{"name": INPUT, "shape": [1], "datatype": "BYTES", "data": ["Loved it!"]}],
        "outputs": [{"name": "label"}, {"name": "confidence"}],
    }
    return {
        "required": True,
        "content": {"application/json": {"schema": request, "example": example}},
    }


async def read_request(request: Request) -> InferenceRequest:
    """The body as an ``InferenceRequest``; refusals as FastAPI's own (serving.http_errors)."""
    content_type = request.headers.get("content-type", "")
    if not is_json_media_type(content_type):
        raise UnsupportedMediaType(
            f"send JSON with Content-Type: application/json (got {content_type})"
        )
    try:
        return InferenceRequest.model_validate_json(await request.body())
    except ValidationError as exc:
        errors = [{**error, "loc": ("body", *error["loc"])} for error in exc.errors()]
        raise RequestValidationError(errors) from None


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
    if not (len(tensor.shape) in (1, 2) and tensor.shape[1:] in ([], [1])):
        raise InvalidInferenceRequest(f"input shape must be [N] or [N, 1], got {tensor.shape}")
    texts = [text_of(item, i) for i, item in enumerate(tensor.data)]
    if tensor.shape[0] != len(texts):
        raise InvalidInferenceRequest(
            f"input shape {tensor.shape} does not match its {len(texts)} data elements"
        )
    return texts


def text_of(item: Any, i: int) -> str:
    """A data element: a text, or (nested by an [N, 1] shape, row-major) a row of one text."""
    if isinstance(item, list):
        if len(item) != 1:
            raise InvalidInferenceRequest(
                f"element {i}: a row of {len(item)} items; rows hold one text (shape [N, 1])"
            )
        item = item[0]
    if not isinstance(item, str):
        raise InvalidInferenceRequest(f"element {i}: expected a string, got {item!r:.40}")
    return item


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
