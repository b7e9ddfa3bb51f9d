"""Routes: ComfyUI's (bare and under ``/api``, as ComfyUI serves them) and midrun's own
route tables (``(method, path, endpoint)`` rows, one :class:`Route` per path)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route, WebSocketRoute

from midrun.server.errors import HTTPError

if TYPE_CHECKING:
    from starlette.requests import HTTPConnection

    from midrun.server.state import Server

Endpoint = Callable[[Request], Awaitable[Response]]
#: ``(method, path, endpoint)``: one operation of midrun's ``/api``.
Operation = tuple[str, str, Endpoint]


def server_of(connection: HTTPConnection) -> Server:
    """The :class:`Server` a request or a WebSocket reached."""
    return connection.app.state.server  # type: ignore[no-any-return]


def both(path: str, endpoint: Callable[..., Any], methods: Iterable[str] = ("GET",),
         name: str | None = None) -> list[BaseRoute]:  # fmt: skip
    """A ComfyUI route: bare and under ``/api``."""
    return [Route(path, endpoint, methods=list(methods), name=name),
            Route("/api" + path, endpoint, methods=list(methods))]  # fmt: skip


def both_ws(path: str, endpoint: Callable[..., Any]) -> list[BaseRoute]:
    return [WebSocketRoute(path, endpoint), WebSocketRoute("/api" + path, endpoint)]


def table(operations: Iterable[Operation]) -> list[BaseRoute]:
    """One Route per path, with each of its methods; every endpoint refuses NUL
    characters in the path and the query string."""
    by_path: dict[str, dict[str, Endpoint]] = {}
    for method, path, endpoint in operations:
        by_path.setdefault(path, {})[method] = _checked(endpoint)
    return [Route(path, _dispatch(methods), methods=list(methods))
            for path, methods in by_path.items()]  # fmt: skip


def _checked(endpoint: Endpoint) -> Endpoint:
    """Refuses NUL characters in the path and query string (no id or filter has one)."""

    async def checked(request: Request) -> Response:
        values = [*request.path_params.values(), *request.query_params.values()]
        if any(isinstance(v, str) and "\x00" in v for v in values):
            raise HTTPError(400, "invalid_request", "NUL characters are not accepted in the "
                            "path or the query string")  # fmt: skip
        return await endpoint(request)

    return checked


def _dispatch(methods: dict[str, Endpoint]) -> Endpoint:
    if len(methods) == 1:
        return next(iter(methods.values()))

    async def endpoint(request: Request) -> Response:
        method = "GET" if request.method == "HEAD" else request.method
        return await methods[method](request)

    return endpoint
