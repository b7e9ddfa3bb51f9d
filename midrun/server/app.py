"""The ASGI app: routes from each module, mounted bare and under ``/api`` as ComfyUI does
(except midrun's own ``/api/...`` routes), behind the auth, size-limit and CORS layers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Receive, Scope, Send

from midrun.core.errors import MidrunError
from midrun.server import (
    catalogue,
    comfy,
    control,
    events,
    files,
    frontend,
    history,
    joblist,
    models,
    system,
    userdata,
)
from midrun.server.auth import AuthMiddleware
from midrun.server.errors import midrun_error, server_fault
from midrun.server.state import Server

OPEN_PREFIXES = ("/assets/", "/extensions/", "/scripts/", "/templates/", "/fonts/", "/cursor/",
                 "/favicon", "/index.html")  # the static page: no token needed  # fmt: skip


class BodyLimit:
    """Refuses request bodies over the limit (413) before a route reads them."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers", [])).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await _too_large(send, self.limit)
            return
        seen = 0

        async def limited() -> Any:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise _TooLarge
            return message

        try:
            await self.app(scope, limited, send)
        except _TooLarge:
            await _too_large(send, self.limit)


class Faults:
    """Answers an exception no route turned into an error as JSON (:func:`server_fault`)
    and keeps the connection usable; Starlette's own last resort would answer plain
    text and re-raise, and the server would then drop the client's connection."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def watched(message: Any) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, watched)
        except Exception as exc:
            if started:
                raise
            response = await server_fault(Request(scope), exc)
            await response(scope, receive, send)


class _TooLarge(Exception):
    pass


async def _too_large(send: Send, limit: int) -> None:
    import json

    message = f"Request bodies are limited to {limit} bytes"
    body = json.dumps({"error": {"type": "payload_too_large", "message": message}})
    await send({"type": "http.response.start", "status": 413,
                "headers": [(b"content-type", b"application/json")]})  # fmt: skip
    await send({"type": "http.response.body", "body": body.encode()})


def create_app(server: Server) -> Starlette:
    routes: list[BaseRoute] = [
        *comfy.routes(),
        *history.routes(),
        *joblist.routes(),
        *system.routes(),
        *events.routes(),
        *files.routes(),
        *models.routes(),
        *catalogue.routes(),
        *userdata.routes(),
        *control.routes(),
        *frontend.routes(server),  # last: the static page at "/"
    ]

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await server.start()
        try:
            yield
        finally:
            await server.stop()

    config = server.config
    middleware = [
        Middleware(Faults),
        Middleware(BodyLimit, limit=config.max_body_bytes),
        Middleware(AuthMiddleware, users=server.users, required=config.requires_auth,
                   open_prefixes=OPEN_PREFIXES),
    ]
    if config.cors_origins:
        middleware.insert(0, Middleware(CORSMiddleware, allow_origins=list(config.cors_origins),
                                        allow_methods=["*"], allow_headers=["*"]))  # fmt: skip
    app = Starlette(routes=routes, middleware=middleware, lifespan=lifespan,
                    exception_handlers={MidrunError: midrun_error})  # fmt: skip
    app.state.server = server
    return app
