"""``/admin/*``: operator actions, behind EMOTITRACK_ADMIN_TOKEN."""

from fastapi import APIRouter

from serving.deps import AdminOnly, ServiceDep
from serving.schemas import ErrorResponse, ReloadResponse

router = APIRouter(prefix="/admin", dependencies=[AdminOnly])


@router.post(
    "/reload",
    response_model=ReloadResponse,
    responses={
        401: {"model": ErrorResponse},
        404: {"model": ErrorResponse, "description": "Admin disabled."},
    },
    summary="Check the registry now and reload if Production moved",
)
async def reload(service: ServiceDep) -> ReloadResponse:
    outcome = await service.store.refresh()
    current = service.store.current
    return ReloadResponse(outcome=outcome, model_version=current.version if current else None)
