"""``/metrics``: the API's Prometheus metrics."""

from fastapi import APIRouter
from fastapi.responses import Response

from serving.deps import ServiceDep

router = APIRouter()


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def metrics(service: ServiceDep) -> Response:
    service.sync_log_metrics()
    payload, content_type = service.metrics.exposition()
    return Response(payload, media_type=content_type)
