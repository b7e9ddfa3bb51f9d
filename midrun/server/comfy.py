"""ComfyUI's API, in ComfyUI's shapes, on midrun's job system: submitting prompts, the
queue, interrupting, history, the jobs listing the frontend reads, node definitions,
system information and the WebSocket. Jobs keep midrun's states; these routes show them
as ComfyUI's (pending, in_progress, completed, failed, cancelled)."""

from __future__ import annotations

import contextlib
import os
import platform
import sys
import uuid
from datetime import datetime
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.websockets import WebSocket

from midrun.core.errors import MidrunError
from midrun.engine.executor import WorkflowInvalidError
from midrun.jobs import breakpoints
from midrun.jobs.records import Job
from midrun.jobs.states import JobConflict, JobNotFound, JobState
from midrun.server.app import both, both_ws
from midrun.server.auth import current_user
from midrun.server.errors import HTTPError, json_body
from midrun.server.hub import SERVER_FLAGS, queue_remaining
from midrun.server.state import Server
from midrun.server.userdata import preview_interval
from midrun.store.schema import jobs, now

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
VERSION = "0.3.60"  # the ComfyUI API level midrun answers as


def _server(request: Request | WebSocket) -> Server:
    return request.app.state.server  # type: ignore[no-any-return]


def ms(at: datetime | None) -> int | None:
    return int(at.timestamp() * 1000) if at is not None else None


# -- submitting ------------------------------------------------------------------------


async def post_prompt(request: Request) -> Response:
    server = _server(request)
    user = current_user(request)
    body = await json_body(request)
    prompt = body.get("prompt")
    if not isinstance(prompt, dict) or not prompt:
        return _prompt_error("no_prompt", "No prompt provided",
                             "The body needs 'prompt': an API-format workflow object")  # fmt: skip
    prompt_id = body.get("prompt_id")
    if prompt_id is not None and (not isinstance(prompt_id, str)
                                  or not _canonical_uuid(prompt_id)):  # fmt: skip
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


def _canonical_uuid(value: str) -> bool:
    try:
        return str(uuid.UUID(value)) == value
    except ValueError:
        return False


def _prompt_error(type_: str, message: str, details: str) -> JSONResponse:
    error = {"type": type_, "message": message, "details": details, "extra_info": {}}
    return JSONResponse({"error": error, "node_errors": {}}, 400)


async def get_prompt(request: Request) -> Response:
    remaining = await run_in_threadpool(queue_remaining, _server(request))
    return JSONResponse({"exec_info": {"queue_remaining": remaining}})


# -- the queue ---------------------------------------------------------------------------


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
    server = _server(request)
    active = [JobState.RUNNING, JobState.PAUSING, JobState.PAUSED]
    running = await run_in_threadpool(server.jobs.list, states=active)
    pending = await run_in_threadpool(server.jobs.list, states=[JobState.QUEUED])
    registry = server.registry
    return JSONResponse({"queue_running": [queue_item(j, registry) for j in running],
                         "queue_pending": [queue_item(j, registry) for j in pending]})  # fmt: skip


async def post_queue(request: Request) -> Response:
    server = _server(request)
    user = current_user(request)
    body = await json_body(request)
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
        await run_in_threadpool(_cancel_pending, server, request, job_id)
    return Response(status_code=200)


def _cancel_pending(server: Server, request: Request, job_id: str) -> bool:
    """Take a queued job out of the queue (recorded as aborted); others are left alone."""
    return _abort_if(request, job_id, "removed from the queue",
                     lambda job: job.state == JobState.QUEUED)  # fmt: skip


def _abort_if(request: Request, job_id: str, reason: str, wanted: Any) -> bool:
    """Abort ``job_id`` if it exists, ``wanted(job)`` holds and the caller may control
    it; whether it was aborted (a job that moved on meanwhile is not)."""
    server = _server(request)
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
    server = _server(request)
    body = await json_body(request, default={}, expect=None)
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
    server = _server(request)
    body = await json_body(request, default={})
    if server.runtime is not None and (body.get("unload_models") or body.get("free_memory")):
        from midrun.diffusion.memory import release

        await run_in_threadpool(server.runtime.cache.clear)
        await run_in_threadpool(release, server.runtime.placement.device)
    return Response(status_code=200)


# -- history -----------------------------------------------------------------------------

_ENDED = [JobState.COMPLETED, JobState.FAILED, JobState.ABORTED]


def _history_jobs(server: Server) -> list[Job]:
    ended = server.jobs.list(states=_ENDED)
    ended = [j for j in ended if j.hidden_at is None]
    ended.sort(key=lambda j: (j.finished_at or j.queued_at or now(), j.number))
    return ended


def history_entry(job: Job, registry: Any) -> dict[str, Any]:
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
    outputs = {k: v for k, v in (job.outputs or {}).items()
               if k not in ("partial", "state") and isinstance(v, dict)}  # fmt: skip
    return {
        "prompt": queue_item(job, registry),
        "outputs": outputs,
        "status": {"status_str": "success" if job.state == JobState.COMPLETED else "error",
                   "completed": job.state == JobState.COMPLETED, "messages": messages},
        "meta": {n: {"node_id": n, "display_node": n, "parent_node": None, "real_node_id": n}
                 for n in outputs},
    }  # fmt: skip


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


def _int_param(request: Request, name: str, default: int | None) -> int | None:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise HTTPError(400, "invalid_query", f"{name} must be an integer, not {raw!r}") from None


async def get_history(request: Request) -> Response:
    server = _server(request)
    max_items = _int_param(request, "max_items", None)
    offset = _int_param(request, "offset", -1)
    ended = await run_in_threadpool(_history_jobs, server)
    if offset is not None and offset < 0 and max_items is not None:
        offset = len(ended) - max_items
    start = max(offset or 0, 0)
    chosen = ended[start:start + max_items] if max_items is not None else ended[start:]
    return JSONResponse({j.id: history_entry(j, server.registry) for j in chosen})


async def get_history_item(request: Request) -> Response:
    server = _server(request)
    prompt_id = request.path_params["prompt_id"]
    try:
        job = await run_in_threadpool(server.jobs.get, prompt_id)
    except JobNotFound:
        return JSONResponse({})
    if job.state not in _ENDED or job.hidden_at is not None:
        return JSONResponse({})
    return JSONResponse({job.id: history_entry(job, server.registry)})


async def post_history(request: Request) -> Response:
    server = _server(request)
    user = current_user(request)
    body = await json_body(request)
    ids: list[str] | None = None
    if not body.get("clear"):
        delete = body.get("delete") or []
        if not isinstance(delete, list) or not all(isinstance(d, str) for d in delete):
            raise HTTPError(400, "invalid_delete", "'delete' must be a list of prompt ids")
        ids = delete
    await run_in_threadpool(_hide, server, ids, None if user.admin else user.name)
    return Response(status_code=200)


def _hide(server: Server, ids: list[str] | None, owner: str | None) -> None:
    """Take ended jobs out of the history listing (rows and audit log stay)."""
    query = jobs.update().where(jobs.c.state.in_([s.value for s in _ENDED]),
                                jobs.c.hidden_at.is_(None))  # fmt: skip
    if ids is not None:
        query = query.where(jobs.c.id.in_(ids))
    if owner is not None:
        query = query.where(jobs.c.owner == owner)
    with server.db.begin() as conn:
        conn.execute(query.values(hidden_at=now()))


# -- the jobs listing (frontend 1.58) -----------------------------------------------------


def job_object(job: Job, *, detail: bool = False) -> dict[str, Any]:
    extra = job.extra_data or {}
    created = extra.get("create_time") or ms(job.queued_at) or 0
    out: dict[str, Any] = {"id": job.id, "status": COMFY_STATUS[job.state],
                           "priority": job.number, "create_time": created}  # fmt: skip
    if job.started_at is not None:
        out["execution_start_time"] = ms(job.started_at)
    if job.state.terminal and job.finished_at is not None:
        out["execution_end_time"] = ms(job.finished_at)
    if job.state == JobState.FAILED:
        out["execution_error"] = execution_error(job)
    items = list(_output_items(job))
    out["outputs_count"] = len(items)
    if items:
        node_id, item = items[-1]
        out["preview_output"] = {**item, "nodeId": node_id, "mediaType": "images"}
    workflow_id = ((extra.get("extra_pnginfo") or {}).get("workflow") or {}).get("id")
    if workflow_id:
        out["workflow_id"] = workflow_id
    out["midrun"] = {"state": job.state.value, "progress": job.progress or {},
                     "batch_id": job.batch_id, "batch_index": job.batch_index,
                     "owner": job.owner, "paused_by": job.paused_by,
                     "reason": job.request_reason}  # fmt: skip
    if detail:
        out["outputs"] = {k: v for k, v in (job.outputs or {}).items()
                          if k not in ("partial", "state") and isinstance(v, dict)}  # fmt: skip
        out["workflow"] = {"prompt": job.workflow, "extra_data": extra}
        if job.state.terminal:
            out["execution_status"] = {
                "status_str": "success" if job.state == JobState.COMPLETED else "error",
                "completed": job.state == JobState.COMPLETED}  # fmt: skip
    return {k: v for k, v in out.items() if v is not None}


def _output_items(job: Job) -> Any:
    for node_id, ui in (job.outputs or {}).items():
        if node_id in ("partial", "state") or not isinstance(ui, dict):
            continue
        for item in ui.get("images") or []:
            if isinstance(item, dict):
                yield node_id, item


_SORTS = {"created_at", "execution_duration"}


async def list_jobs(request: Request) -> Response:
    server = _server(request)
    q = request.query_params
    wanted = [s for s in (q.get("status") or "").split(",") if s]
    bad = [s for s in wanted if s not in STATUSES]
    if bad:
        return JSONResponse({"error": f"Invalid status value(s): {', '.join(bad)}. "
                                      f"Valid values: {', '.join(STATUSES)}"}, 400)  # fmt: skip
    sort_by = q.get("sort_by", "created_at")
    if sort_by not in _SORTS:
        return JSONResponse({"error": "sort_by must be 'created_at' or 'execution_duration'"},
                            400)  # fmt: skip
    order = q.get("sort_order", "desc")
    if order not in ("asc", "desc"):
        return JSONResponse({"error": "sort_order must be 'asc' or 'desc'"}, 400)
    try:
        limit = int(q["limit"]) if q.get("limit") else None
    except ValueError:
        return JSONResponse({"error": "limit must be an integer"}, 400)
    if limit is not None and limit <= 0:
        return JSONResponse({"error": "limit must be a positive integer"}, 400)
    try:
        offset = max(int(q.get("offset") or 0), 0)
    except ValueError:
        return JSONResponse({"error": "offset must be an integer"}, 400)
    states = [s for s, name in COMFY_STATUS.items() if not wanted or name in wanted]
    workflow_id = q.get("workflow_id")
    store = server.jobs.store
    if sort_by == "created_at" and not workflow_id:  # the frontend's query: paged in SQL
        page_jobs = await run_in_threadpool(
            lambda: store.list(states=states, listed_only=True, limit=limit, offset=offset,
                               newest_first=order == "desc",
                               oldest_first=order == "asc"))  # fmt: skip
        total = await run_in_threadpool(lambda: store.count(states=states, listed_only=True))
        page = [job_object(j) for j in page_jobs]
        return JSONResponse({"jobs": page, "pagination": {
            "offset": offset, "limit": limit, "total": total,
            "has_more": offset + len(page) < total}})  # fmt: skip
    found = await run_in_threadpool(lambda: store.list(states=states, listed_only=True))
    objects = [job_object(j) for j in found]
    if workflow_id:
        objects = [o for o in objects if o.get("workflow_id") == workflow_id]
    if sort_by == "created_at":
        objects.sort(key=lambda o: o["create_time"], reverse=order == "desc")
    else:
        objects.sort(key=lambda o: (o.get("execution_end_time") or 0)
                     - (o.get("execution_start_time") or 0), reverse=order == "desc")  # fmt: skip
    total = len(objects)
    page = objects[offset:offset + limit] if limit is not None else objects[offset:]
    return JSONResponse({"jobs": page, "pagination": {
        "offset": offset, "limit": limit, "total": total,
        "has_more": offset + len(page) < total}})  # fmt: skip


async def get_job(request: Request) -> Response:
    server = _server(request)
    try:
        job = await run_in_threadpool(server.jobs.get, request.path_params["job_id"])
    except JobNotFound:
        return JSONResponse({"error": "Job not found"}, 404)
    return JSONResponse(job_object(job, detail=True))


async def cancel_job(request: Request) -> Response:
    cancelled = await run_in_threadpool(_cancel, request, request.path_params["job_id"])
    return JSONResponse({"cancelled": cancelled})


async def cancel_jobs(request: Request) -> Response:
    try:
        body = await json_body(request)
    except HTTPError:
        return JSONResponse({"error": "Request body must be valid JSON"}, 400)
    ids = body.get("job_ids")
    if not isinstance(ids, list):
        return JSONResponse({"error": "job_ids must be a list"}, 400)
    invalid = [i for i in ids if not isinstance(i, str) or not _canonical_uuid(i)]
    if invalid:
        return JSONResponse({"error": "job_ids contains invalid id(s)", "invalid_ids": invalid},
                            400)  # fmt: skip
    results = [await run_in_threadpool(_cancel, request, i) for i in ids]
    return JSONResponse({"cancelled": any(results)})


def _cancel(request: Request, job_id: str) -> bool:
    return _abort_if(request, job_id, "cancelled", lambda job: not job.state.terminal)


# -- node definitions and the system ----------------------------------------------------


async def object_info(request: Request) -> Response:
    server = _server(request)
    return JSONResponse(await run_in_threadpool(server.registry.object_info))


async def object_info_one(request: Request) -> Response:
    server = _server(request)
    declared = server.registry.get(request.path_params["node_class"])
    if declared is None:
        return JSONResponse({})
    entry = await run_in_threadpool(server.registry.object_info_entry, declared)
    return JSONResponse({declared.class_type: entry})


async def system_stats(request: Request) -> Response:
    server = _server(request)
    return JSONResponse(await run_in_threadpool(_system_stats, server))


def _system_stats(server: Server) -> dict[str, Any]:
    import midrun

    total, free = _memory()
    devices = []
    torch_version = ""
    try:
        import torch

        torch_version = torch.__version__
        for index in range(torch.cuda.device_count()):
            free_b, total_b = torch.cuda.mem_get_info(index)
            devices.append({"name": torch.cuda.get_device_name(index), "type": "cuda",
                            "index": index, "vram_total": total_b, "vram_free": free_b,
                            "torch_vram_total": total_b, "torch_vram_free": free_b})  # fmt: skip
    except ImportError:
        pass
    if not devices:
        devices.append({"name": "cpu", "type": "cpu", "index": 0, "vram_total": total,
                        "vram_free": free, "torch_vram_total": total,
                        "torch_vram_free": free})  # fmt: skip
    return {
        "system": {
            "os": sys.platform, "ram_total": total, "ram_free": free,
            "comfyui_version": VERSION, "midrun_version": getattr(midrun, "__version__", ""),
            "python_version": sys.version, "pytorch_version": torch_version,
            "embedded_python": False, "deploy_environment": "midrun",
            # The frontend skips its release-notes fetch when it sees this flag.
            "argv": ["midrun", "serve", "--disable-api-nodes"],
            "machine": platform.machine(),
        },
        "devices": devices,
    }  # fmt: skip


def _memory() -> tuple[int, int]:
    try:
        with open("/proc/meminfo", encoding="utf-8") as f:
            info = {line.split(":")[0]: int(line.split()[1]) * 1024 for line in f}
        return info["MemTotal"], info.get("MemAvailable", info["MemFree"])
    except (OSError, KeyError, ValueError):
        pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        return pages, pages


async def features(request: Request) -> Response:
    return JSONResponse(SERVER_FLAGS)


async def websocket(ws: WebSocket) -> None:
    await _server(ws).hub.websocket(ws)


def routes() -> list[BaseRoute]:
    return [
        *both("/prompt", post_prompt, ["POST"]),
        *both("/prompt", get_prompt),
        *both("/queue", get_queue),
        *both("/queue", post_queue, ["POST"]),
        *both("/interrupt", post_interrupt, ["POST"]),
        *both("/free", post_free, ["POST"]),
        *both("/history", get_history),
        *both("/history", post_history, ["POST"]),
        *both("/history/{prompt_id}", get_history_item),
        Route("/api/jobs", list_jobs),
        Route("/api/jobs/cancel", cancel_jobs, methods=["POST"]),
        Route("/api/jobs/{job_id}", get_job),
        Route("/api/jobs/{job_id}/cancel", cancel_job, methods=["POST"]),
        *both("/object_info", object_info),
        *both("/object_info/{node_class}", object_info_one),
        *both("/system_stats", system_stats),
        *both("/features", features),
        *both_ws("/ws", websocket),
    ]
