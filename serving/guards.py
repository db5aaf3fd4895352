"""What a request must satisfy before a route sees it: a body size, a time limit and, when keys
are configured, an API key. Plain ASGI middleware, so each check runs before the body is read or
parsed (an unauthenticated or oversized body costs us nothing but the refusal)."""

from __future__ import annotations

import asyncio
import hashlib
import secrets
from collections.abc import Iterable, Sequence
from typing import Any

from fastapi import FastAPI, HTTPException
from fastapi.responses import JSONResponse
from pydantic import SecretStr
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# The endpoints that see texts or write to the prediction log.
KEYED_PATHS = frozenset({"/predict", "/predict/batch", "/invocations", "/feedback"})


def is_keyed(path: str) -> bool:
    """One of KEYED_PATHS, or an Open Inference Protocol infer route (its path names the model:
    ``/v2/models/{name}[/versions/{version}]/infer``)."""
    return path in KEYED_PATHS or (path.startswith("/v2/models/") and path.endswith("/infer"))


HOW_TO_SEND_A_KEY = "send `Authorization: Bearer <key>` or `X-API-Key: <key>`"


async def _no_body() -> Message:
    return {"type": "http.request", "body": b"", "more_body": False}


async def _answer(
    send: Send, status: int, detail: str, headers: dict[str, str] | None = None
) -> None:
    await JSONResponse({"detail": detail}, status_code=status, headers=headers)(
        {"type": "http"}, _no_body, send
    )


class BodySizeLimit:
    """Refuse bodies over ``max_bytes`` with 413 before they are read or parsed: at once when
    Content-Length says so, otherwise as soon as the chunks received cross the limit."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._refuse(send)
            return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:
                raise _TooLarge(self.max_bytes)
            return message

        try:
            await self.app(scope, limited, send)
        except _TooLarge:
            await self._refuse(send)

    async def _refuse(self, send: Send) -> None:
        await _answer(send, 413, f"request body over {self.max_bytes} bytes")


class _TooLarge(HTTPException):
    """An HTTPException, because FastAPI turns any other exception raised while it reads the
    body into a 400; this one it answers as it is."""

    def __init__(self, max_bytes: int) -> None:
        super().__init__(413, detail=f"request body over {max_bytes} bytes")


class RequestTimeout:
    """Every request gets ``timeout_s``, body upload included, so a client that sends its body
    slowly (slowloris) or a request stuck behind the model cannot hold the server: 408 when the
    body had not arrived, 503 when it had and the answer had not."""

    def __init__(self, app: ASGIApp, timeout_s: float) -> None:
        self.app = app
        self.timeout_s = timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        body_expected = _has_body(scope)
        body_received = False
        answered = False

        async def tracked_receive() -> Message:
            nonlocal body_received
            message = await receive()
            if message["type"] == "http.request" and not message.get("more_body", False):
                body_received = True
            return message

        async def tracked_send(message: Message) -> None:
            nonlocal answered
            if message["type"] == "http.response.start":
                answered = True
            await send(message)

        try:
            async with asyncio.timeout(self.timeout_s) as deadline:
                await self.app(scope, tracked_receive, tracked_send)
        except TimeoutError:
            if not deadline.expired():
                raise  # the app's own TimeoutError, not ours
            if answered:
                return  # headers are out: all we can do is close the connection
            if body_expected and not body_received:
                await _answer(
                    send,
                    408,
                    f"request body not received within {self.timeout_s:g} s; send it at once",
                    {"connection": "close"},
                )
            else:
                await _answer(
                    send,
                    503,
                    f"request not answered within {self.timeout_s:g} s "
                    "(EMOTITRACK_REQUEST_TIMEOUT_S); retry later or send fewer texts",
                    {"retry-after": "1"},
                )


def _has_body(scope: Scope) -> bool:
    headers = dict(scope["headers"])
    length = headers.get(b"content-length", b"0")
    return headers.get(b"transfer-encoding") is not None or (length.isdigit() and int(length) > 0)


class ApiKeys:
    """The configured keys, compared in constant time: both sides are hashed to equal lengths
    and every key is compared, so neither timing nor early exit says how close a guess was."""

    def __init__(self, keys: Iterable[SecretStr]) -> None:
        self._digests = [_digest(k.get_secret_value().encode()) for k in keys]

    def __bool__(self) -> bool:
        return bool(self._digests)

    def accepts(self, given: bytes) -> bool:
        if not given.strip():  # no credential is never a key, whatever was configured
            return False
        digest = _digest(given)
        matches = [secrets.compare_digest(digest, known) for known in self._digests]
        return any(matches)


def _digest(value: bytes) -> bytes:
    return hashlib.sha256(value).digest()


def key_from_headers(headers: Sequence[tuple[bytes, bytes]]) -> bytes | None:
    """The key a client sent: ``Authorization: Bearer <key>`` or ``X-API-Key: <key>``. An
    Authorization header, when present, decides alone (empty or another scheme is a wrong key,
    even next to a right X-API-Key): one credential per request, never the better of two."""
    found = dict(headers)
    if b"authorization" in found:
        authorization = found[b"authorization"].strip()
        scheme, _, credentials = authorization.partition(b" ")
        return credentials.strip() if scheme.lower() == b"bearer" else authorization
    key = found.get(b"x-api-key", b"").strip()
    return key or None


class ApiKeyGuard:
    """401 on the keyed endpoints unless the request carries an accepted key."""

    def __init__(self, app: ASGIApp, keys: ApiKeys) -> None:
        self.app = app
        self.keys = keys

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and is_keyed(scope["path"]):
            given = key_from_headers(scope["headers"])
            if given is None or not self.keys.accepts(given):
                problem = "missing API key" if given is None else "API key not accepted"
                await _answer(
                    send, 401, f"{problem}: {HOW_TO_SEND_A_KEY}", {"www-authenticate": "Bearer"}
                )
                return
        await self.app(scope, receive, send)


def document_api_keys(app: FastAPI) -> None:
    """State in the OpenAPI schema that the keyed endpoints need a key (either header), with
    their 401; the check itself is ``ApiKeyGuard``, which runs before the body is read."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = build()
        schemes = schema.setdefault("components", {}).setdefault("securitySchemes", {})
        schemes["ApiKeyBearer"] = {
            "type": "http",
            "scheme": "bearer",
            "description": "An EMOTITRACK_API_KEYS key as a bearer token.",
        }
        schemes["ApiKeyHeader"] = {
            "type": "apiKey",
            "in": "header",
            "name": "X-API-Key",
            "description": "An EMOTITRACK_API_KEYS key.",
        }
        for path in filter(is_keyed, schema["paths"]):
            for operation in schema["paths"][path].values():
                operation["security"] = [{"ApiKeyBearer": []}, {"ApiKeyHeader": []}]
                operation["responses"]["401"] = {
                    "description": f"Missing or wrong API key: {HOW_TO_SEND_A_KEY}.",
                    "content": {
                        "application/json": {
                            "schema": {"$ref": "#/components/schemas/ErrorResponse"}
                        }
                    },
                }
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
