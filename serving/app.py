"""The API: ``create_app()`` builds a FastAPI app around one ``Service`` (uvicorn runs it with
``factory=True``), joins the routers, and installs the middleware and the error handlers."""

import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from serving import VERSION
from serving.guards import ApiKeyGuard, ApiKeys, BodySizeLimit, RequestTimeout, document_api_keys
from serving.http_errors import EXCEPTION_HANDLERS
from serving.middleware import MetricsMiddleware
from serving.routes import (
    admin,
    docs,
    feedback,
    health,
    invocations,
    metrics,
    open_inference,
    predictions,
)
from serving.service import Service
from serving.settings import ServingSettings

log = logging.getLogger("emotitrack.serving")


def create_app(settings: ServingSettings | None = None) -> FastAPI:
    settings = settings or ServingSettings()
    _log_to_stderr()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        service = Service(settings)
        app.state.service = service
        await service.start()
        _collect_garbage_rarely()
        try:
            yield
        finally:
            await service.close()

    routers = [
        health.router,
        predictions.router(settings),
        invocations.router(settings),
        open_inference.router(settings),
        feedback.router,
        metrics.router,
        admin.router(settings),
        docs.router(),
    ]
    # NB: their routes, not app.include_router(): FastAPI matches an included router through
    # an extra layer on every request.
    app = FastAPI(
        title="EmotiTrack",
        version=VERSION,
        description="Sentiment analysis with the Production model from the MLflow registry.",
        routes=[route for router in routers for route in router.routes],
        lifespan=lifespan,
        exception_handlers=EXCEPTION_HANDLERS,
        docs_url=None,  # serving.routes.docs: the same pages, with their assets served here
        redoc_url=None,
    )
    route_paths = [
        (path, route.path_regex)
        for route in app.routes
        if (path := getattr(route, "path", None)) and hasattr(route, "path_regex")
    ]
    # Added innermost first. Outermost to innermost: CORS (answers preflights, labels every
    # answer), metrics (count refusals too), timeout, size limit, API key, routes.
    keys = ApiKeys(settings.api_keys)
    if keys:
        app.add_middleware(ApiKeyGuard, keys=keys)
        document_api_keys(app)
    feedback.document_labels(app)  # outermost: the classes follow the model, never cached
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(RequestTimeout, timeout_s=settings.request_timeout_s)
    app.add_middleware(MetricsMiddleware, routes=route_paths)
    if settings.cors_origins:  # closed by default: no CORS headers, browsers refuse
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.cors_origins),
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type", "X-API-Key"],
            max_age=600,
        )
    return app


def _collect_garbage_rarely() -> None:
    """`emotitrack serve` starts with the collector off (serving.cli): what start-up built is
    frozen first, so the collector never walks it; then the youngest generation is collected
    less often, since every request allocates many short-lived objects (model loads freeze
    the heap again: model_store.freeze_long_lived_objects)."""
    gc.freeze()
    gc.set_threshold(50_000)
    gc.enable()


def _log_to_stderr() -> None:
    """Our INFO lines (model loaded, store up/down) next to uvicorn's; runs in every worker."""
    if not log.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False
