"""The small lists ComfyUI's frontend asks for at start-up: extensions (midrun's own),
workflow templates (midrun's examples), embeddings, i18n, subgraphs, node replacements,
the core template library (empty) and ``user.css``."""

from __future__ import annotations

import json
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from midrun.graph.ui_layout import api_to_ui
from midrun.graph.workflow import Workflow, is_api_format
from midrun.server import files
from midrun.server.errors import HTTPError
from midrun.server.files import (
    EXAMPLES_DIR,
    TEMPLATE_MODULE,
    TEMPLATE_NAME,
    inside,
)
from midrun.server.routing import both, server_of


async def embeddings(request: Request) -> JSONResponse:
    return JSONResponse([])  # midrun has no textual-inversion embeddings


async def empty_dict(request: Request) -> JSONResponse:
    return JSONResponse({})


async def empty_list(request: Request) -> JSONResponse:
    return JSONResponse([])


async def no_user_css(request: Request) -> Response:
    """The page links ``user.css`` beside itself; midrun keeps users' styles in their user
    directory (``/api/userdata/user.css``), so this one is empty."""
    return Response("", media_type="text/css", headers={"Cache-Control": "no-cache"})


async def extensions(request: Request) -> JSONResponse:
    web_dir = files.WEB_DIR  # read when asked: a test points it elsewhere
    if not web_dir.is_dir():
        return JSONResponse([])
    # The entry modules; helpers in sub-folders are imported by them, not loaded alone.
    scripts = sorted(p.name for p in web_dir.glob("*.js") if p.is_file())
    return JSONResponse([f"/extensions/midrun/{quote(s)}" for s in scripts])


async def workflow_templates(request: Request) -> JSONResponse:
    names = sorted(p.stem for p in EXAMPLES_DIR.glob("*.json") if p.is_file())
    return JSONResponse({TEMPLATE_MODULE: names})


async def workflow_template(request: Request) -> Response:
    """An example workflow as the canvas loads it: API-format examples are laid out as a
    UI-format document (``/?template=NAME&source=midrun`` opens one)."""
    module, name = request.path_params["module"], request.path_params["name"]
    if module != TEMPLATE_MODULE or not TEMPLATE_NAME.match(name):
        raise HTTPError(404, "not_found", f"No workflow template {module}/{name}")
    examples = EXAMPLES_DIR.resolve()
    path = inside(examples, f"{name}.json")
    if path is None or path.parent != examples or not path.is_file():
        raise HTTPError(404, "not_found", f"No workflow template {module}/{name}")
    document = json.loads(path.read_text(encoding="utf-8"))
    if is_api_format(document):
        document = api_to_ui(Workflow.from_api(document), server_of(request).registry)
    return JSONResponse(document)


def routes() -> list[BaseRoute]:
    return [
        *both("/embeddings", embeddings),
        *both("/i18n", empty_dict),
        *both("/extensions", extensions),
        *both("/workflow_templates", workflow_templates),
        *both("/workflow_templates/{module}/{name}.json", workflow_template),
        *both("/node_replacements", empty_dict),
        *both("/global_subgraphs", empty_dict),
        # The core template library (ComfyUI's models, which midrun does not have) is empty;
        # midrun's own workflows are under /api/workflow_templates.
        Route("/templates/index.json", empty_list),
        Route("/templates/index_logo.json", empty_dict),
        Route("/user.css", no_user_css),  # /internal is bare only in ComfyUI
    ]
