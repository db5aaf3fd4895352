"""What routes ask for by type: ``service: ServiceDep``, the admin token check, and which
protocol's error body a router answers with (``speaks``)."""

from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from serving.guards import ApiKeys
from serving.http_errors import Protocol
from serving.service import Service

bearer = HTTPBearer(auto_error=False)


async def get_service(request: Request) -> Service:
    # async: a plain def dependency would send every request through the threadpool
    service: Service = request.app.state.service
    return service


ServiceDep = Annotated[Service, Depends(get_service)]
BearerToken = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]


async def require_admin(service: ServiceDep, credentials: BearerToken) -> None:
    """Admin endpoints: off (404) without EMOTITRACK_ADMIN_TOKEN, 401 without that token."""
    token = service.settings.admin_token
    if token is None:
        raise HTTPException(404, detail="admin endpoints are disabled: set EMOTITRACK_ADMIN_TOKEN")
    given = credentials.credentials if credentials else ""
    if not ApiKeys([token]).accepts(given.encode()):  # hashed, then compared in constant time
        raise HTTPException(
            401, detail="missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"}
        )


AdminOnly = Depends(require_admin)


def speaks(protocol: Protocol) -> Any:
    """A router dependency: errors on its routes get ``protocol``'s body (serving.http_errors)."""

    async def mark(request: Request) -> None:
        request.state.protocol = protocol

    return Depends(mark)
