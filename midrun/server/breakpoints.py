"""Breakpoints on jobs and saved workflows (set, list, enable, remove) and stepping a
paused job, under ``/api``."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from midrun.jobs import breakpoints as bps
from midrun.jobs.views import applying_breakpoints
from midrun.server.auth import User, check_owner
from midrun.server.errors import HTTPError
from midrun.server.requests import body_of, call, field, jobs_of, ok, owned_job, owned_workflow
from midrun.server.routing import Operation


async def post_job_breakpoint(request: Request) -> Response:
    body = await body_of(request)
    job, user = await owned_job(request)
    created = await call(bps.create, jobs_of(request), body, job_id=job.id, actor=user.name)
    return ok(created, 201)


async def get_job_breakpoints(request: Request) -> Response:
    job, _ = await owned_job(request)
    return ok(await call(applying_breakpoints, jobs_of(request), job))


async def post_workflow_breakpoint(request: Request) -> Response:
    body = await body_of(request)
    saved, user = await owned_workflow(request, request.path_params["workflow_id"])
    created = await call(bps.create, jobs_of(request), body, workflow_id=saved["id"],
                         actor=user.name)  # fmt: skip
    return ok(created, 201)


async def get_workflow_breakpoints(request: Request) -> Response:
    saved, _ = await owned_workflow(request, request.path_params["workflow_id"])
    return ok(await call(bps.list_breakpoints, jobs_of(request), workflow_id=saved["id"]))


async def owned_breakpoint(request: Request) -> tuple[dict[str, Any], User]:
    service = jobs_of(request)
    bp = await call(bps.get, service, request.path_params["bp_id"])
    if bp["job_id"] is not None:
        job = await call(service.get, bp["job_id"])
        return bp, check_owner(request, job.owner, f"Breakpoint {bp['id']} (job {job.id})")
    _, user = await owned_workflow(request, bp["workflow_id"])
    return bp, user


async def delete_breakpoint(request: Request) -> Response:
    bp, user = await owned_breakpoint(request)
    return ok(await call(bps.remove, jobs_of(request), bp["id"], actor=user.name))


async def patch_breakpoint(request: Request) -> Response:
    body = await body_of(request)
    enabled = field(body, "enabled", bool, required=True)
    bp, user = await owned_breakpoint(request)
    return ok(await call(bps.set_enabled, jobs_of(request), bp["id"], enabled,
                         actor=user.name))  # fmt: skip


async def step_job(request: Request) -> Response:
    body = await body_of(request)
    mode = field(body, "mode", str, required=True)
    if mode not in bps.STEP_MODES:
        raise HTTPError(400, "invalid_step_mode", f"'mode' is one of {', '.join(bps.STEP_MODES)}"
                        f", got {mode!r}", field="mode")  # fmt: skip
    front = field(body, "front", bool)
    job, user = await owned_job(request)
    stepped = await call(bps.request_step, jobs_of(request), job.id, mode, actor=user.name,
                         front=front)  # fmt: skip
    return ok(stepped.to_dict())


ROUTES: list[Operation] = [
    ("POST", "/api/jobs/{job_id}/step", step_job),
    ("POST", "/api/jobs/{job_id}/breakpoints", post_job_breakpoint),
    ("GET", "/api/jobs/{job_id}/breakpoints", get_job_breakpoints),
    ("POST", "/api/workflows/{workflow_id}/breakpoints", post_workflow_breakpoint),
    ("GET", "/api/workflows/{workflow_id}/breakpoints", get_workflow_breakpoints),
    ("DELETE", "/api/breakpoints/{bp_id}", delete_breakpoint),
    ("PATCH", "/api/breakpoints/{bp_id}", patch_breakpoint),
]
