"""What the service is, whether it is alive and ready, and which model it serves."""

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response

from serving import VERSION
from serving.deps import ServiceDep
from serving.responses import ERRORS
from serving.schemas import Health, ModelInfo, Readiness, ServiceInfo
from serving.service import scoring_place

router = APIRouter()


@router.get("/", response_model=ServiceInfo, summary="Service information")
async def root(service: ServiceDep) -> ServiceInfo:
    return ServiceInfo(
        service="emotitrack", version=VERSION, model_uri=service.settings.model_uri, docs="/docs"
    )


@router.get("/health", response_model=Health, summary="Liveness: the process answers")
async def health() -> Health:
    return Health(status="ok")


@router.get(
    "/ready",
    response_model=Readiness,
    responses={
        503: {"model": Readiness, "description": "Not ready: no model loaded (reason given)."}
    },
    summary="Readiness: a model is loaded",
)
async def ready(service: ServiceDep) -> Response:
    model, status = service.store.current, service.store.status
    body = Readiness(
        ready=model is not None,
        reason="" if model else (status.last_error or "no model loaded yet"),
        model_version=model.version if model else None,
        registry_reachable=status.registry_reachable,
        registry_error=status.last_error,
        last_check_at=status.last_check_at,
        prediction_log_store_up=service.prediction_log.counters.store_up,
        scoring=scoring_place(model),
    )
    return JSONResponse(body.model_dump(mode="json"), status_code=200 if model else 503)


@router.get(
    "/model",
    response_model=ModelInfo,
    responses={503: ERRORS[503]},
    summary="The model being served",
)
async def model_info(service: ServiceDep) -> ModelInfo:
    model = service.model()
    return ModelInfo(
        name=model.name,
        version=model.version,
        uri=model.ref.uri,
        reference=model.ref.reference,
        run_id=model.ref.run_id,
        loaded_at=model.loaded_at,
        load_seconds=model.load_seconds,
        classes=model.classes,
        metrics=model.metrics,
    )
