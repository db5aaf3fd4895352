"""``/admin/*``: operator actions, behind EMOTITRACK_ADMIN_TOKEN. Without a token they answer
404 and stay out of the OpenAPI document: a client reading it sees only what it may call."""

from fastapi import APIRouter

from serving.deps import AdminOnly, ServiceDep
from serving.schemas import ErrorResponse, ReloadResponse
from serving.settings import ServingSettings


async def reload(service: ServiceDep) -> ReloadResponse:
    outcome = await service.store.refresh()
    current = service.store.current
    return ReloadResponse(outcome=outcome, model_version=current.version if current else None)


def router(settings: ServingSettings) -> APIRouter:
    admin = APIRouter(prefix="/admin", dependencies=[AdminOnly])
    admin.add_api_route(
        "/reload",
        reload,
        methods=["POST"],
        response_model=ReloadResponse,
        responses={
            401: {"model": ErrorResponse},
            404: {"model": ErrorResponse, "description": "Admin disabled."},
        },
        summary="Check the registry now and reload if Production moved",
        include_in_schema=settings.admin_token is not None,
    )
    return admin
