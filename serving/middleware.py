"""Request metrics: every request counted and timed by route template and status code."""

from __future__ import annotations

import re
import time
from collections.abc import Iterable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from serving.service import Service


class MetricsMiddleware:
    """Count, time and track in-flight requests by route template and status code. Plain ASGI,
    outside the guards, so refusals (401, 408, 413, 503) are counted too."""

    def __init__(self, app: ASGIApp, routes: Iterable[tuple[str, re.Pattern[str]]]) -> None:
        self.app = app
        templates = list(routes)
        self.routes = {path for path, _ in templates}
        # Templates with parameters (/v2/models/{name}/infer) are matched by regex, so each
        # model's requests are labelled by the template, not counted as unmatched.
        self.patterns = [(path, regex) for path, regex in templates if "{" in path]

    def route_of(self, path: str) -> str:
        if path in self.routes:
            return path
        return next(
            (template for template, regex in self.patterns if regex.match(path)), "unmatched"
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        service: Service | None = getattr(scope["app"].state, "service", None)
        if service is None:
            await self.app(scope, receive, send)
            return
        path = self.route_of(scope["path"])
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
