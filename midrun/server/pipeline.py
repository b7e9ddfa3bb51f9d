"""The global pipeline pause under ``/api``: its status (any user), pause and resume
(admins)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from midrun.jobs import pipeline
from midrun.server.auth import current_user, require_admin
from midrun.server.errors import HTTPError
from midrun.server.requests import call, jobs_of, ok
from midrun.server.routing import Operation


async def get_pipeline(request: Request) -> Response:
    current_user(request)
    return ok(await call(pipeline.status, jobs_of(request)))


async def _pipeline(request: Request, action: Callable[..., dict[str, Any]]) -> Response:
    user = require_admin(request)
    try:
        return ok(await call(action, jobs_of(request), actor=user.name))
    except pipeline.PipelineConflict as exc:
        raise HTTPError(409, exc.type, exc.message, **exc.extra_info) from exc


async def pause_pipeline(request: Request) -> Response:
    return await _pipeline(request, pipeline.pause_pipeline)


async def resume_pipeline(request: Request) -> Response:
    return await _pipeline(request, pipeline.resume_pipeline)


ROUTES: list[Operation] = [
    ("GET", "/api/pipeline", get_pipeline),
    ("POST", "/api/pipeline/pause", pause_pipeline),
    ("POST", "/api/pipeline/resume", resume_pipeline),
]
