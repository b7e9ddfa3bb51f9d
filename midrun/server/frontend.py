"""The canvas: the official ComfyUI frontend (PyPI ``comfyui-frontend-package``) at ``/``,
and midrun's frontend extension (plain ES modules) under ``/extensions/midrun/``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

WEB = Path(__file__).parent / "web"  # midrun's extension modules


def package_dir() -> Path | None:
    """The frontend package's ``static`` folder, if the package is installed."""
    try:
        import comfyui_frontend_package
    except ImportError:
        return None
    static = Path(comfyui_frontend_package.__file__).parent / "static"
    return static if (static / "index.html").is_file() else None


class NoCache(StaticFiles):
    """Static files; the page and scripts are revalidated on every load (as ComfyUI does),
    so an upgraded frontend or extension is never mixed with a cached one."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        if path in ("", ".", "index.html") or path.endswith((".js", ".css", ".html")):
            response.headers["Cache-Control"] = "no-cache"
        return response


async def _missing(request: Request) -> Response:
    return HTMLResponse(
        "<h1>midrun</h1><p>The server is running. The canvas needs the ComfyUI frontend: "
        "<code>pip install comfyui-frontend-package</code> (or <code>pip install "
        "'midrun[server]'</code>), then reload.</p>", status_code=200)  # fmt: skip


def routes(server: Any) -> list[BaseRoute]:
    out: list[BaseRoute] = []
    if WEB.is_dir():
        out.append(Mount("/extensions/midrun", app=NoCache(directory=WEB), name="midrun-web"))
    static = server.config.frontend_dir or package_dir()
    if static is not None:
        out.append(Mount("/", app=NoCache(directory=static, html=True), name="frontend"))
    else:
        out.append(Route("/", _missing))
    return out
