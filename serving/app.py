"""The FastAPI app: factory + lifespan around a ModelStore, a MicroBatcher and a PredictionLog."""

# No `from __future__ import annotations` here: FastAPI reads the request models of the routes
# from their annotations, and those models are built per app (configured limits) in a closure.

import asyncio
import email.message
import gc
import hashlib
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from datetime import UTC, datetime
from typing import Annotated, Any

import orjson
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from emotitrack.core.descriptors import TextDescriber
from emotitrack.core.prediction_log import PredictionRecord, new_request_id
from serving.batching import MicroBatcher
from serving.guards import (
    ApiKeyGuard,
    ApiKeys,
    BodySizeLimit,
    RequestTimeout,
    document_api_keys,
)
from serving.invocations import PayloadError, texts_from_payload
from serving.metrics import ServingMetrics, build_metrics
from serving.model_store import LoadedModel, ModelStore
from serving.prediction_log import PredictionLog
from serving.schemas import (
    BatchResponse,
    ErrorResponse,
    FeedbackRequest,
    FeedbackResponse,
    Health,
    InvocationsResponse,
    ModelInfo,
    Prediction,
    Readiness,
    ReloadResponse,
    ServiceInfo,
    request_models,
    text_problem,
)
from serving.settings import ServingSettings

log = logging.getLogger("emotitrack.serving")
VERSION = "0.1.0"

ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorResponse, "description": "Malformed body (not JSON, not a known payload)."},
    408: {
        "model": ErrorResponse,
        "description": "Body not received within EMOTITRACK_REQUEST_TIMEOUT_S.",
    },
    413: {"model": ErrorResponse, "description": "Body larger than the configured limit."},
    415: {
        "model": ErrorResponse,
        "description": "Body sent without Content-Type: application/json.",
    },
    422: {
        "model": ErrorResponse,
        "description": "Invalid field: wrong type, empty or too long text, too many texts.",
    },
    503: {
        "model": ErrorResponse,
        "description": "No model loaded yet (none promoted, or registry down), or the request "
        "was not answered within EMOTITRACK_REQUEST_TIMEOUT_S.",
    },
}


class Service:
    """Everything a request needs, built by the lifespan; one per app."""

    def __init__(self, settings: ServingSettings) -> None:
        self.settings = settings
        self.metrics: ServingMetrics = build_metrics()
        self.store = ModelStore(
            settings.model_uri,
            settings.tracking_uri,
            self._record_outcome,
            scoring_process=settings.scoring_process,
        )
        self.in_flight = 0  # HTTP requests being handled (MetricsMiddleware counts them)
        self.batcher = MicroBatcher(
            window_ms=settings.batch_window_ms,
            max_batch=settings.max_model_batch,
            in_flight=lambda: self.in_flight,
        )
        self.prediction_log = PredictionLog(
            settings.prediction_log_url,
            settings.spill_dir,
            flush_interval_s=settings.log_flush_interval_s,
            flush_rows=settings.log_flush_rows,
            buffer_rows=settings.log_buffer_rows,
        )
        self._synced = {"written": 0, "spilled": 0, "dropped": 0, "replayed": 0}
        # model version -> its describer, loading or loaded (only without stored texts)
        self._describers: dict[str, asyncio.Task[TextDescriber]] = {}

    def _record_outcome(self, outcome: str, model: LoadedModel | None) -> None:
        self.metrics.reloads.labels(outcome=outcome).inc()
        self.metrics.model_loaded.set(1 if model is not None else 0)
        if model is not None:
            version = float(model.version) if model.version.isdigit() else 0.0
            self.metrics.model_version.labels(model_name=model.name).set(version)
            self.metrics.model_load_seconds.set(model.load_seconds)

    def model(self) -> LoadedModel:
        model = self.store.current
        if model is None:
            raise HTTPException(
                503,
                detail=f"no model loaded: {self.store.status.last_error or 'starting up'}; "
                "promote a version (emotitrack promote) and retry",
            )
        return model

    async def predict(
        self, texts: list[str], endpoint: str, *, explain: bool = False
    ) -> tuple[LoadedModel, list[dict[str, Any]]]:
        """One result per text, shaped as ``Prediction``; every one queued for the prediction log.

        The records are queued last, once the whole answer is computed: a request refused, failed
        or cancelled by its timeout before then leaves no logged prediction its client never got
        (only a timeout while the answer is being sent still can).

        Plain dicts, serialised once by orjson: validating our own output through pydantic again
        was a measurable share of a single prediction's cost."""
        model = self.model()
        explainer = model.explain
        if explain and explainer is None:
            raise HTTPException(
                400,
                detail=f"model version {model.version} cannot explain its predictions (not an "
                'EmotiTrack pipeline); send "explain": false',
            )
        started = time.perf_counter()
        proba = await self.batcher.score(model.score, texts)
        latency_ms = (time.perf_counter() - started) * 1000
        explanations = await asyncio.to_thread(explainer, texts) if explain and explainer else None
        stored_texts: list[str | None] = (
            [None] * len(texts) if not self.settings.store_text else list(texts)
        )
        hashes, descriptors = await self._hashes_and_descriptors(model, texts)
        now = datetime.now(UTC)
        classes = model.classes
        best = proba.argmax(axis=1).tolist()
        confidences = []
        predictions, records = [], []
        for i, (text, text_sha256, described, row, index) in enumerate(
            zip(stored_texts, hashes, descriptors, proba.tolist(), best, strict=True)
        ):
            confidences.append(row[index])
            probabilities = dict(zip(classes, row, strict=True))
            request_id = new_request_id()
            predictions.append(
                {
                    "sentiment": classes[index],
                    "confidence": row[index],
                    "probabilities": probabilities,
                    "model_version": model.version,
                    "request_id": request_id,
                }
            )
            if explanations is not None:
                predictions[-1]["explanation"] = explanations[i]
            records.append(
                PredictionRecord(
                    request_id=request_id,
                    created_at=now,
                    text=text,
                    label=classes[index],
                    confidence=row[index],
                    probabilities=probabilities,
                    model_name=model.name,
                    model_version=model.version,
                    latency_ms=latency_ms,
                    endpoint=endpoint,
                    text_sha256=text_sha256,
                    descriptors=described,
                )
            )
        self.prediction_log.submit(records)
        self._count(model, confidences, best)
        return model, predictions

    async def _hashes_and_descriptors(
        self, model: LoadedModel, texts: list[str]
    ) -> tuple[list[str | None], list[dict[str, float] | None]]:
        """What the log keeps instead of the texts when it may not keep them; None each
        otherwise. In a thread: 1,000 texts of 20,000 characters take seconds, during which
        the event loop would answer nothing, not even /health."""
        if self.settings.store_text:
            return [None] * len(texts), [None] * len(texts)
        # shielded: a request that times out must not cancel the load others wait for
        describer = await asyncio.shield(self.describer(model))
        return await asyncio.to_thread(hash_and_describe, describer, texts)

    def describer(self, model: LoadedModel) -> asyncio.Task[TextDescriber]:
        """The descriptors' tokenizer and vocabulary of ``model``, built once per version in a
        thread: from the loaded pipeline, or by loading the artifact for a model loaded without
        one."""
        task = self._describers.get(model.version)
        if task is None:
            build = (
                asyncio.to_thread(TextDescriber.for_pipeline, model.pipeline)
                if model.pipeline is not None
                else asyncio.to_thread(load_describer, model.ref.load_uri)
            )
            task = asyncio.get_running_loop().create_task(build)
            self._describers = {model.version: task}  # older versions' describers go
        return task

    def _count(self, model: LoadedModel, confidences: list[float], best: list[int]) -> None:
        # Plain Python: np.unique and per-call label lookups were ~10% of a single prediction.
        self.metrics.log_queued.inc(len(best))
        for index, count in Counter(best).items():
            self.metrics.predictions.labels(
                label=model.classes[index], model_version=model.version
            ).inc(count)
        for confidence in confidences:
            self.metrics.confidence.observe(confidence)

    def check_texts(self, texts: list[str]) -> None:
        limit = self.settings.max_text_chars
        for i, text in enumerate(texts):
            where = f"text {i}" if len(texts) > 1 else "text"
            problem = text_problem(text)
            if problem:
                raise HTTPException(422, detail=f"{where} {problem}")
            if len(text) > limit:
                raise HTTPException(
                    422, detail=f"{where} has {len(text)} characters; the limit is {limit}"
                )
        if len(texts) > self.settings.max_batch_texts:
            raise HTTPException(
                422,
                detail=f"{len(texts)} texts; at most {self.settings.max_batch_texts} per request, split the batch",
            )

    def sync_log_metrics(self) -> None:
        """Carry the prediction log's counters into Prometheus counters (as increments)."""
        counters = self.prediction_log.counters
        for name, metric in (
            ("written", self.metrics.log_written),
            ("spilled", self.metrics.log_spilled),
            ("dropped", self.metrics.log_dropped),
            ("replayed", self.metrics.log_replayed),
        ):
            value = getattr(counters, name)
            if value > self._synced[name]:
                metric.inc(value - self._synced[name])
                self._synced[name] = value
        self.metrics.log_queue_depth.set(self.prediction_log.queue_depth())
        self.metrics.log_store_up.set(1 if counters.store_up else 0)
        self.metrics.scoring_process_up.set(
            1 if scoring_place(self.store.current) == "process" else 0
        )


def scoring_place(model: LoadedModel | None) -> str | None:
    if model is None:
        return None
    return "process" if model.scoring is not None and model.scoring.in_child else "in-process"


def hash_and_describe(
    describer: TextDescriber, texts: list[str]
) -> tuple[list[str | None], list[dict[str, float] | None]]:
    """Each text's SHA-256 and descriptors."""
    hashes: list[str | None] = [hashlib.sha256(t.encode()).hexdigest() for t in texts]
    descriptors: list[dict[str, float] | None] = [describer.describe_one(t) for t in texts]
    return hashes, descriptors


def load_describer(load_uri: str) -> TextDescriber:
    """The model's own tokenizer and vocabulary; without them (another kind of pyfunc, or the
    artifact unreadable now) descriptors are still computed, with no out-of-vocabulary share."""
    import mlflow

    try:
        pipeline = mlflow.pyfunc.load_model(load_uri).unwrap_python_model().pipeline
    except Exception as exc:
        log.warning("descriptors of %s without its vocabulary: %s", load_uri, type(exc).__name__)
        pipeline = None
    return TextDescriber.for_pipeline(pipeline)


async def get_service(request: Request) -> Service:
    # async: a plain def dependency would send every request through the threadpool
    service: Service = request.app.state.service
    return service


ServiceDep = Annotated[Service, Depends(get_service)]
bearer = HTTPBearer(auto_error=False)


async def require_admin(
    service: ServiceDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> None:
    token = service.settings.admin_token
    if token is None:
        raise HTTPException(404, detail="admin endpoints are disabled: set EMOTITRACK_ADMIN_TOKEN")
    given = credentials.credentials if credentials else ""
    if not ApiKeys([token]).accepts(given.encode()):  # hashed, then compared in constant time
        raise HTTPException(
            401, detail="missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"}
        )


def create_app(settings: ServingSettings | None = None) -> FastAPI:
    settings = settings or ServingSettings()
    _log_to_stderr()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        service = Service(settings)
        app.state.service = service
        await asyncio.to_thread(service.prediction_log.start)
        service.batcher.start()
        await service.store.refresh()
        # `emotitrack serve` starts with the collector off (serving.cli). Everything built so far
        # is frozen before it comes back on: its first pass would otherwise walk the whole
        # start-up heap (~0.3 s before the first answer). A request allocates hundreds of
        # short-lived objects: collecting the youngest generation every 50,000 allocations
        # instead of 700 gave ~7% more req/s at c=64 (model loads freeze the heap again:
        # model_store.freeze_long_lived_objects).
        gc.freeze()
        gc.set_threshold(50_000)
        gc.enable()
        poller = asyncio.create_task(
            service.store.poll_forever(settings.poll_interval_s), name="model-poller"
        )
        try:
            yield
        finally:
            poller.cancel()
            with suppress(asyncio.CancelledError):
                await poller
            await service.batcher.stop()
            await service.store.close()
            await asyncio.to_thread(service.prediction_log.close)
            log.info(
                "prediction log closed: %d written, %d spilled, %d dropped",
                service.prediction_log.counters.written,
                service.prediction_log.counters.spilled,
                service.prediction_log.counters.dropped,
            )

    app = FastAPI(
        title="EmotiTrack",
        version=VERSION,
        description="Sentiment analysis with the Production model from the MLflow registry.",
        lifespan=lifespan,
    )
    _add_error_handlers(app)
    _add_routes(app, settings)
    routes = {getattr(r, "path", "") for r in app.routes}
    # Added innermost first. Outermost to innermost: CORS (answers preflights, labels every
    # answer), metrics (count refusals too), timeout, size limit, API key, routes.
    keys = ApiKeys(settings.api_keys)
    if keys:
        app.add_middleware(ApiKeyGuard, keys=keys)
        document_api_keys(app)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(RequestTimeout, timeout_s=settings.request_timeout_s)
    app.add_middleware(MetricsMiddleware, routes=routes)
    if settings.cors_origins:  # closed by default: no CORS headers, browsers refuse
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.cors_origins),
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type", "X-API-Key"],
            max_age=600,
        )
    return app


def _log_to_stderr() -> None:
    """Our INFO lines (model loaded, store up/down) next to uvicorn's; runs in every worker."""
    if not log.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False


def _add_routes(app: FastAPI, settings: ServingSettings) -> None:
    PredictRequest, BatchRequest = request_models(settings.max_text_chars, settings.max_batch_texts)

    @app.get("/", response_model=ServiceInfo, summary="Service information")
    async def root(service: ServiceDep) -> ServiceInfo:
        return ServiceInfo(
            service="emotitrack",
            version=VERSION,
            model_uri=service.settings.model_uri,
            docs="/docs",
        )

    @app.get("/health", response_model=Health, summary="Liveness: the process answers")
    async def health() -> Health:
        return Health(status="ok")

    @app.get(
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

    @app.get(
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

    @app.post("/predict", response_model=Prediction, responses=ERRORS, summary="Classify one text")
    async def predict(body: PredictRequest, service: ServiceDep) -> Response:  # type: ignore[valid-type]
        text: str = body.text  # type: ignore[attr-defined]
        explain: bool = body.explain  # type: ignore[attr-defined]
        _, predictions = await service.predict([text], "predict", explain=explain)
        return OrjsonResponse(predictions[0])

    @app.post(
        "/predict/batch",
        response_model=BatchResponse,
        responses=ERRORS,
        summary="Classify many texts",
    )
    async def predict_batch(body: BatchRequest, service: ServiceDep) -> Response:  # type: ignore[valid-type]
        texts: list[str] = body.texts  # type: ignore[attr-defined]
        model, predictions = await service.predict(texts, "batch")
        return OrjsonResponse({"predictions": predictions, "model_version": model.version})

    @app.post(
        "/invocations",
        response_model=InvocationsResponse,
        responses=ERRORS,
        summary="MLflow scoring-server compatible predictions",
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {"schema": {"type": "object"}},
                    "text/csv": {"schema": {"type": "string"}},
                },
            }
        },
    )
    async def invocations(request: Request, service: ServiceDep) -> Response:
        try:
            texts = texts_from_payload(
                await request.body(), request.headers.get("content-type", "application/json")
            )
        except PayloadError as exc:
            raise HTTPException(400, detail=str(exc)) from exc
        if not texts:
            raise HTTPException(422, detail="no texts in the payload")
        service.check_texts(texts)
        _, predictions = await service.predict(texts, "invocations")
        return OrjsonResponse(
            {
                "predictions": [
                    {"label": p["sentiment"], "confidence": p["confidence"]}
                    | {f"prob_{k}": v for k, v in p["probabilities"].items()}
                    for p in predictions
                ],
                # Beside the rows, not in them: the rows keep `mlflow models serve`'s columns.
                "request_ids": [p["request_id"] for p in predictions],
            }
        )

    @app.post(
        "/feedback",
        response_model=FeedbackResponse,
        responses={
            404: {"model": ErrorResponse, "description": "Unknown request_id."},
            409: {
                "model": ErrorResponse,
                "description": "Feedback for this request_id exists already.",
            },
            **ERRORS,
        },
        summary="Store the true label of a logged prediction",
    )
    async def feedback(body: FeedbackRequest, service: ServiceDep) -> FeedbackResponse:
        model = service.model()
        if body.label not in model.classes:
            raise HTTPException(
                422, detail=f"unknown label {body.label!r}; use one of {model.classes}"
            )
        try:
            known = await asyncio.to_thread(service.prediction_log.knows, body.request_id)
            if not known:
                raise HTTPException(
                    404, detail=f"no prediction with request_id {body.request_id!r}"
                )
            stored = await asyncio.to_thread(
                service.prediction_log.add_feedback, body.request_id, body.label
            )
        except HTTPException:
            raise
        except Exception as exc:  # the store is down: the client should retry later
            raise HTTPException(
                503, detail="prediction log store unavailable; retry later"
            ) from exc
        if not stored:
            raise HTTPException(409, detail=f"feedback for {body.request_id!r} was already given")
        return FeedbackResponse(request_id=body.request_id, label=body.label)

    @app.get("/metrics", summary="Prometheus metrics", response_class=Response)
    async def metrics(service: ServiceDep) -> Response:
        service.sync_log_metrics()
        payload, content_type = service.metrics.exposition()
        return Response(payload, media_type=content_type)

    @app.post(
        "/admin/reload",
        response_model=ReloadResponse,
        dependencies=[Depends(require_admin)],
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


# What FastAPI answers when the JSON parser fails with anything but a syntax error: invalid
# UTF-8, nesting past the recursion limit, an integer over Python's 4,300 digits.
FASTAPI_BODY_PARSE_ERROR = "There was an error parsing the body"
BODY_PARSE_PROBLEM = (
    "request body could not be parsed: not valid UTF-8 JSON, nested too deeply, or a number "
    'too long; send a JSON object such as {"text": "..."}'
)


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code == 400 and exc.detail == FASTAPI_BODY_PARSE_ERROR:
            exc = StarletteHTTPException(400, detail=BODY_PARSE_PROBLEM)
        return await http_exception_handler(request, exc)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {
                "field": ".".join(str(p) for p in e["loc"]),
                "problem": _what_to_fix(e),
                "type": e["type"],
            }
            for e in exc.errors()
        ]
        content_type = request.headers.get("content-type", "")
        if request.method == "POST" and not is_json_media_type(content_type):
            return JSONResponse(
                {
                    "detail": f"send JSON with Content-Type: application/json (got {content_type or 'none'})"
                },
                status_code=415,
            )
        if any(e["type"] == "json_invalid" for e in errors):
            return JSONResponse(
                {"detail": "request body is not valid JSON", "errors": errors}, status_code=400
            )
        summary = "; ".join(f"{e['field']}: {e['problem']}" for e in errors)
        return JSONResponse(
            {"detail": f"invalid request: {summary}", "errors": errors}, status_code=422
        )


def is_json_media_type(content_type: str) -> bool:
    """Whether FastAPI parses a body with this Content-Type as JSON, by its own rule:
    ``application/json`` or ``application/*+json``, any case, parameters aside."""
    message = email.message.Message()
    message["content-type"] = content_type
    subtype = message.get_content_subtype()
    return (
        bool(content_type)
        and message.get_content_maintype() == "application"
        and (subtype == "json" or subtype.endswith("+json"))
    )


# How to fix an empty or malformed field, by field name (texts: the default).
FIELD_FIXES = {
    "request_id": "not a request_id; send the 32 lowercase hex characters a prediction "
    "returned as request_id",
    "label": "empty; send the true label, one of the served model's classes (GET /model)",
}


def _what_to_fix(error: Any) -> str:
    """Pydantic's message, or one that says how to fix the request for the limits we set."""
    kind, ctx, given = error["type"], error.get("ctx") or {}, error.get("input")
    field = next((part for part in reversed(error["loc"]) if isinstance(part, str)), "")
    if kind.startswith("string_") and field in FIELD_FIXES:
        return FIELD_FIXES[field]
    if kind == "string_too_short":
        return "empty or whitespace; send the text to classify"
    if kind == "string_too_long" and isinstance(given, str):
        return f"{len(given)} characters; the limit is {ctx.get('max_length')}"
    if kind == "too_long" and isinstance(given, list):
        return f"{len(given)} texts; at most {ctx.get('max_length')} per request, split the batch"
    if kind == "too_short" and isinstance(given, list):
        return "send at least one text"
    if kind == "value_error" and "error" in ctx:  # our validators' messages, without a prefix
        return str(ctx["error"])
    return str(error["msg"])


class OrjsonResponse(Response):
    """JSON serialised by orjson, the body already in its documented shape (FastAPI passes a
    returned Response through; the route's response_model still documents it)."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


class MetricsMiddleware:
    """Count, time and track in-flight requests by route template and status code."""

    def __init__(self, app: ASGIApp, routes: set[str]) -> None:
        self.app = app
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        service: Service | None = getattr(scope["app"].state, "service", None)
        if service is None:
            await self.app(scope, receive, send)
            return
        path = scope["path"] if scope["path"] in self.routes else "unmatched"
        method = scope["method"]
        status = 500
        metrics = service.metrics

        async def record_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        started = time.perf_counter()
        in_progress = metrics.in_progress.labels(route=path, method=method)
        in_progress.inc()
        service.in_flight += 1
        try:
            await self.app(scope, receive, record_status)
        finally:
            service.in_flight -= 1
            in_progress.dec()
            labels = {"route": path, "method": method, "status": str(status)}
            metrics.requests.labels(**labels).inc()
            metrics.latency.labels(**labels).observe(time.perf_counter() - started)
