"""The canvas: the official ComfyUI frontend (PyPI ``comfyui-frontend-package``) at ``/``,
and midrun's frontend extension (plain ES modules) under ``/extensions/midrun/``."""

from __future__ import annotations

import base64
import hashlib
import re
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

WEB = Path(__file__).parent / "web"  # midrun's extension modules
#: The page talks to this server only: no fonts, update checks or telemetry from elsewhere;
#: scripts are the server's files and the page's own inline scripts (by hash).
CSP = ("default-src 'self'; script-src 'self' 'wasm-unsafe-eval' {inline}; "
       "style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; media-src 'self' blob:; "
       "font-src 'self' data:; "
       "connect-src 'self' ws: wss: data: blob:; worker-src 'self' blob:; object-src 'none'; "
       "base-uri 'self'; frame-ancestors 'self'")  # fmt: skip
INLINE_SCRIPT = re.compile(r"<script>(.*?)</script>", re.S)


def content_policy(page: str) -> str:
    """The page's Content-Security-Policy, allowing exactly its inline scripts."""
    hashes = [base64.b64encode(hashlib.sha256(body.encode()).digest()).decode()
              for body in INLINE_SCRIPT.findall(page)]  # fmt: skip
    return CSP.format(inline=" ".join(f"'sha256-{h}'" for h in hashes))


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
    so an upgraded frontend or extension is never mixed with a cached one. Pages get
    ``policy`` as their Content-Security-Policy when one is given."""

    def __init__(self, *args: Any, policy: str | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.policy = policy

    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        page = path in ("", ".", "index.html") or path.endswith(".html")
        if page or path.endswith((".js", ".css")):
            response.headers["Cache-Control"] = "no-cache"
        if page and self.policy:
            response.headers["Content-Security-Policy"] = self.policy
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
        # "/" is its index.html, with the page's policy (see NoCache).
        policy = content_policy((Path(static) / "index.html").read_text(encoding="utf-8"))
        out.append(Mount("/", app=NoCache(directory=static, html=True, policy=policy),
                         name="frontend"))  # fmt: skip
    else:
        out.append(Route("/", _missing))
    return out
