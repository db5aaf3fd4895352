"""``/docs`` (Swagger UI) and ``/redoc`` that work offline: their scripts, styles and icon are
served by the app from the ``fastapi-offline`` package (MIT), not fetched from a CDN."""

from importlib.resources import files

from fastapi import APIRouter
from fastapi.openapi.docs import (
    get_redoc_html,
    get_swagger_ui_html,
    get_swagger_ui_oauth2_redirect_html,
)
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

ASSETS_PATH = "/docs-assets"
OPENAPI_URL = "/openapi.json"
OAUTH2_REDIRECT_URL = "/docs/oauth2-redirect"
TITLE = "EmotiTrack"


def router() -> APIRouter:
    assets = files("fastapi_offline") / "static"
    docs = APIRouter(include_in_schema=False)
    docs.mount(ASSETS_PATH, StaticFiles(directory=str(assets)), name="docs-assets")

    @docs.get("/docs")
    async def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=OPENAPI_URL,
            title=f"{TITLE} - Swagger UI",
            swagger_js_url=f"{ASSETS_PATH}/swagger-ui-bundle.js",
            swagger_css_url=f"{ASSETS_PATH}/swagger-ui.css",
            swagger_favicon_url=f"{ASSETS_PATH}/favicon.png",
            oauth2_redirect_url=OAUTH2_REDIRECT_URL,
            # Swagger UI would send the schema to an online validator for its badge
            swagger_ui_parameters={"validatorUrl": None},
        )

    @docs.get(OAUTH2_REDIRECT_URL)
    async def swagger_ui_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    @docs.get("/redoc")
    async def redoc() -> HTMLResponse:
        return get_redoc_html(
            openapi_url=OPENAPI_URL,
            title=f"{TITLE} - ReDoc",
            redoc_js_url=f"{ASSETS_PATH}/redoc.standalone.js",
            redoc_favicon_url=f"{ASSETS_PATH}/favicon.png",
            with_google_fonts=False,
        )

    return docs
