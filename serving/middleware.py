"""Request metrics: every request counted and timed by route template and status code."""

from __future__ import annotations

import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from serving.service import Service


class MetricsMiddleware:
    """Count, time and track in-flight requests by route template and status code. Plain ASGI,
    outside the guards, so refusals (401, 408, 413, 503) are counted too."""

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
