"""ComfyUI's model listings: ``/models``, ``/models/{folder}``, ``/experiment/models``
and the folders they come from (``/internal/folder_paths``)."""

from __future__ import annotations

import weakref
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Route

from midrun.diffusion.paths import KINDS, WEIGHT_SUFFIXES, ModelPaths
from midrun.server.errors import HTTPError
from midrun.server.routing import both, server_of

_paths: weakref.WeakKeyDictionary[Any, ModelPaths] = weakref.WeakKeyDictionary()


def model_paths(request: Request) -> ModelPaths:
    server = server_of(request)
    if server.runtime is not None and getattr(server.runtime, "paths", None) is not None:
        return server.runtime.paths
    if server not in _paths:
        _paths[server] = ModelPaths.from_dir(server.models_dir)
    return _paths[server]


def _kind(request: Request) -> str:
    folder = request.path_params["folder"]
    if folder not in KINDS:
        raise HTTPError(404, "not_found", f"No model folder {folder!r}")
    return folder


async def list_kinds(request: Request) -> JSONResponse:
    return JSONResponse(list(KINDS))


async def list_models(request: Request) -> JSONResponse:
    kind = _kind(request)
    return JSONResponse(await run_in_threadpool(model_paths(request).names, kind))


async def experiment_kinds(request: Request) -> JSONResponse:
    paths = model_paths(request)
    return JSONResponse([{"name": kind, "folders": [str(f) for f in paths.folders.get(kind, [])],
                          "extensions": sorted(WEIGHT_SUFFIXES)} for kind in KINDS])  # fmt: skip


async def experiment_models(request: Request) -> JSONResponse:
    kind = _kind(request)
    return JSONResponse(await run_in_threadpool(_model_entries, model_paths(request), kind))


def _model_entries(paths: ModelPaths, kind: str) -> list[dict[str, Any]]:
    """Each model with the index of the folder that holds it (built-in models, which live
    in no folder, get the index after the last folder)."""
    folders = paths.folders.get(kind, [])
    entries = []
    for name in paths.names(kind):
        index = next((i for i, f in enumerate(folders) if (f / name).exists()), None)
        path = folders[index] / name if index is not None else paths.builtin[kind][name]
        try:
            st = path.stat()
        except OSError:
            continue
        entries.append({"name": name, "pathIndex": len(folders) if index is None else index,
                        "modified": st.st_mtime, "created": st.st_ctime,
                        "size": st.st_size if path.is_file() else 0})  # fmt: skip
    return entries


async def folder_paths(request: Request) -> JSONResponse:
    paths = model_paths(request)
    return JSONResponse({kind: [str(f) for f in paths.folders.get(kind, [])] for kind in KINDS})


def routes() -> list[BaseRoute]:
    return [
        *both("/models", list_kinds),
        *both("/models/{folder}", list_models),
        *both("/experiment/models", experiment_kinds),
        *both("/experiment/models/{folder}", experiment_models),
        Route("/internal/folder_paths", folder_paths),
    ]
