"""ComfyUI's API, in ComfyUI's shapes, on midrun's job system: submitting prompts, the
queue, interrupting, freeing memory and the WebSocket here; history (:mod:`.history`), the
jobs listing the frontend reads (:mod:`.joblist`), node definitions and system information
(:mod:`.system`) beside it. Jobs keep midrun's states; these routes show them as
ComfyUI's (pending, in_progress, completed, failed, cancelled)."""

from __future__ import annotations

import contextlib
import uuid
from datetime import datetime
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute
from starlette.websockets import WebSocket

from midrun.core.errors import MidrunError
from midrun.engine.executor import WorkflowInvalidError
from midrun.jobs import breakpoints
from midrun.jobs.records import Job
from midrun.jobs.states import JobConflict, JobNotFound, JobState
from midrun.server.auth import current_user, require_admin, visible_owner
from midrun.server.errors import HTTPError
from midrun.server.hub import queue_remaining
from midrun.server.requests import body_of
from midrun.server.routing import both, both_ws, server_of
from midrun.server.userdata import preview_interval
from midrun.store.schema import now

SENSITIVE = ("auth_token_comfy_org", "api_key_comfy_org")
COMFY_STATUS = {
    JobState.QUEUED: "pending",
    JobState.RUNNING: "in_progress",
    JobState.PAUSING: "in_progress",
    JobState.PAUSED: "in_progress",  # not finished: ComfyUI has no word for paused
    JobState.COMPLETED: "completed",
    JobState.FAILED: "failed",
    JobState.ABORTED: "cancelled",
}
STATUSES = ("pending", "in_progress", "completed", "failed", "cancelled")
VERSION = "0.27.0"  # the ComfyUI release whose API midrun answers as (compared in tests)


def ms(at: datetime | None) -> int | None:
    return int(at.timestamp() * 1000) if at is not None else None


# -- submitting ------------------------------------------------------------------------


async def post_prompt(request: Request) -> Response:
    server = server_of(request)
    user = current_user(request)
    body = await body_of(request)
    prompt = body.get("prompt")
    if not isinstance(prompt, dict) or not prompt:
        return _prompt_error("no_prompt", "No prompt provided",
                             "The body needs 'prompt': an API-format workflow object")  # fmt: skip
    prompt_id = body.get("prompt_id")
    if prompt_id is not None and (not isinstance(prompt_id, str)
                                  or not canonical_uuid(prompt_id)):  # fmt: skip
        return _prompt_error("invalid_prompt_id", "Invalid prompt_id",
                             "prompt_id must be a lowercase hyphenated UUID")  # fmt: skip
    targets = body.get("partial_execution_targets")
    if targets is not None and (not isinstance(targets, list)
                                or not all(isinstance(t, str) for t in targets)):  # fmt: skip
        return _prompt_error("invalid_partial_execution_targets", "Invalid targets",
                             "partial_execution_targets must be a list of node ids")  # fmt: skip
    extra = body.get("extra_data") or {}
    if not isinstance(extra, dict):
        return _prompt_error("invalid_extra_data", "Invalid extra_data",
                             "extra_data must be an object")  # fmt: skip
    extra = {k: v for k, v in extra.items() if k not in SENSITIVE}
    client_id = body.get("client_id")
    if isinstance(client_id, str) and client_id:
        extra["client_id"] = client_id
    extra["create_time"] = int(now().timestamp() * 1000)
    options = extra.get("midrun")
    if options is None or (isinstance(options, dict) and "preview_every" not in options):
        every = await run_in_threadpool(preview_interval, request)
        if every is not None:
            extra["midrun"] = {**(options or {}), "preview_every": every}
    front = bool(body.get("front"))
    job_id = prompt_id or str(uuid.uuid4())
    try:
        pnginfo = extra.get("extra_pnginfo")
        canvas = pnginfo.get("workflow") if isinstance(pnginfo, dict) else None
        stops = breakpoints.from_canvas(canvas, prompt)
        job = await run_in_threadpool(
            server.jobs.submit, prompt, front=front, job_id=job_id, owner=user.name,
            extra_data=extra, targets=targets or None, breakpoints=stops)  # fmt: skip
    except WorkflowInvalidError as exc:
        info = dict(exc.extra_info)
        node_errors = info.pop("node_errors", {})
        error = info.pop("error", None) or {"type": exc.type, "message": exc.message,
                                            "details": exc.details, "extra_info": info}  # fmt: skip
        return JSONResponse({"error": error, "node_errors": node_errors}, 400)
    except MidrunError as exc:
        return JSONResponse({"error": exc.to_dict(), "node_errors": {}}, 400)
    server.hub.remember(job.id, extra.get("client_id"), job.owner, job.workflow)
    return JSONResponse({"prompt_id": job.id, "number": job.number, "node_errors": {}})


def canonical_uuid(value: str) -> bool:
    try:
        return str(uuid.UUID(value)) == value
    except ValueError:
        return False


def _prompt_error(type_: str, message: str, details: str) -> JSONResponse:
    error = {"type": type_, "message": message, "details": details, "extra_info": {}}
    return JSONResponse({"error": error, "node_errors": {}}, 400)


async def get_prompt(request: Request) -> Response:
    remaining = await run_in_threadpool(queue_remaining, server_of(request))
    return JSONResponse({"exec_info": {"queue_remaining": remaining}})


# -- the queue ---------------------------------------------------------------------------


def execution_status(job: Job) -> dict[str, Any]:
    """An ended job's ComfyUI ``status``: ``status_str``, ``completed`` and the messages
    its run sent (start, then success, error or interrupted), as history keeps them."""
    messages: list[list[Any]] = []
    if job.started_at is not None:
        messages.append(["execution_start", {"prompt_id": job.id,
                                             "timestamp": ms(job.started_at)}])  # fmt: skip
    end = ms(job.finished_at)
    if job.state == JobState.COMPLETED:
        messages.append(["execution_success", {"prompt_id": job.id, "timestamp": end}])
    elif job.state == JobState.FAILED:
        messages.append(["execution_error", {**execution_error(job), "timestamp": end}])
    else:
        messages.append(["execution_interrupted", {"prompt_id": job.id, "node_id": "",
                                                   "node_type": "", "executed": [],
                                                   "timestamp": end}])  # fmt: skip
    return {"status_str": "success" if job.state == JobState.COMPLETED else "error",
            "completed": job.state == JobState.COMPLETED, "messages": messages}  # fmt: skip


def queue_item(job: Job, registry: Any) -> list[Any]:
    """ComfyUI's ``[number, prompt_id, prompt, extra_data, outputs_to_execute]``."""
    workflow = job.workflow if job.kind == "workflow" else {}
    outputs = []
    for node_id, node in workflow.items():
        declared = registry.get(node.get("class_type", "")) if isinstance(node, dict) else None
        if declared is not None and declared.output_node:
            outputs.append(node_id)
    return [job.number, job.id, workflow, dict(job.extra_data or {}), outputs]


async def get_queue(request: Request) -> Response:
    server = server_of(request)
    active = {JobState.RUNNING, JobState.PAUSING, JobState.PAUSED}
    # One statement, so one snapshot: a job moving from queued to running between two
    # reads would be in neither list (ComfyUI always lists a prompt in one of them).
    listed = await run_in_threadpool(server.jobs.list, states=[*active, JobState.QUEUED],
                                     owner=visible_owner(request))  # fmt: skip
    running = [j for j in listed if j.state in active]
    pending = [j for j in listed if j.state == JobState.QUEUED]
    registry = server.registry
    return JSONResponse({"queue_running": [queue_item(j, registry) for j in running],
                         "queue_pending": [queue_item(j, registry) for j in pending]})  # fmt: skip


async def post_queue(request: Request) -> Response:
    server = server_of(request)
    user = current_user(request)
    body = await body_of(request)
    targets: list[str] = []
    if body.get("clear"):
        pending = await run_in_threadpool(server.jobs.list, states=[JobState.QUEUED])
        targets += [j.id for j in pending if user.admin or j.owner == user.name]
    delete = body.get("delete")
    if delete is not None:
        if not isinstance(delete, list) or not all(isinstance(d, str) for d in delete):
            raise HTTPError(400, "invalid_delete", "'delete' must be a list of prompt ids")
        targets += delete
    for job_id in targets:
        await run_in_threadpool(_cancel_pending, request, job_id)
    return Response(status_code=200)


def _cancel_pending(request: Request, job_id: str) -> bool:
    """Take a queued job out of the queue (recorded as aborted); others are left alone."""
    return abort_if(request, job_id, "removed from the queue",
                     lambda job: job.state == JobState.QUEUED)  # fmt: skip


def abort_if(request: Request, job_id: str, reason: str, wanted: Any) -> bool:
    """Abort ``job_id`` if it exists, ``wanted(job)`` holds and the caller may control
    it; whether it was aborted (a job that moved on meanwhile is not)."""
    server = server_of(request)
    try:
        job = server.jobs.get(job_id)
    except JobNotFound:
        return False
    if not wanted(job) or not _may_control(request, job):
        return False
    try:
        server.jobs.abort(job_id, reason, actor=current_user(request).name)
    except JobConflict:
        return False
    return True


def _may_control(request: Request, job: Job) -> bool:
    user = current_user(request)
    return user.admin or job.owner == user.name


async def post_interrupt(request: Request) -> Response:
    """Stop the running prompt (``prompt_id``), or every running prompt the caller may
    control. midrun aborts it; what finished is kept."""
    server = server_of(request)
    body = await body_of(request, default={}, expect=None)
    prompt_id = body.get("prompt_id") if isinstance(body, dict) else None
    active = [JobState.RUNNING, JobState.PAUSING, JobState.PAUSED]
    running = await run_in_threadpool(server.jobs.list, states=active)
    for job in running:
        if (prompt_id is None or job.id == prompt_id) and _may_control(request, job):
            with contextlib.suppress(JobConflict):
                await run_in_threadpool(server.jobs.abort, job.id, "interrupted",
                                        actor=current_user(request).name)  # fmt: skip
    return Response(status_code=200)


async def post_free(request: Request) -> Response:
    require_admin(request)  # the models are everyone's
    server = server_of(request)
    body = await body_of(request, default={})
    if server.runtime is not None and (body.get("unload_models") or body.get("free_memory")):
        await run_in_threadpool(server.free_memory)  # every worker's runtime
    return Response(status_code=200)


def execution_error(job: Job) -> dict[str, Any]:
    error = job.error or {}
    extra = error.get("extra_info") or {}
    node = str(extra.get("node_id") or "")
    node_type = ""
    if node and isinstance(job.workflow.get(node), dict):
        node_type = job.workflow[node].get("class_type", "")
    return {"prompt_id": job.id, "node_id": node, "node_type": node_type,
            "exception_message": error.get("message", ""),
            "exception_type": extra.get("exception_type") or error.get("type", "Error"),
            "traceback": [str(t) for t in extra.get("traceback") or []],
            "current_inputs": {}, "current_outputs": []}  # fmt: skip


async def websocket(ws: WebSocket) -> None:
    await server_of(ws).hub.websocket(ws)


def routes() -> list[BaseRoute]:
    return [
        *both("/prompt", post_prompt, ["POST"]),
        *both("/prompt", get_prompt),
        *both("/queue", get_queue),
        *both("/queue", post_queue, ["POST"]),
        *both("/interrupt", post_interrupt, ["POST"]),
        *both("/free", post_free, ["POST"]),
        *both_ws("/ws", websocket),
    ]
