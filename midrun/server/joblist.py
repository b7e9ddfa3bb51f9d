"""The jobs listing ComfyUI's frontend (1.58 on) reads: ``/api/jobs`` (filtered, sorted,
paged), one job, and cancelling jobs, in ComfyUI's shapes with midrun's own state beside
them (``midrun``)."""

from __future__ import annotations

from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from midrun.jobs.records import Job
from midrun.jobs.states import JobNotFound, JobState
from midrun.server.auth import may_see, visible_owner
from midrun.server.comfy import (
    COMFY_STATUS,
    STATUSES,
    abort_if,
    canonical_uuid,
    execution_error,
    execution_status,
    ms,
)
from midrun.server.errors import HTTPError
from midrun.server.requests import body_of
from midrun.server.routing import server_of

MAX_PAGE = 10_000  # jobs in one page of the listing
MAX_OFFSET = 2**62


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
            out["execution_status"] = execution_status(job)
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
    server = server_of(request)
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
    if limit is not None and not 0 < limit <= MAX_PAGE:
        return JSONResponse({"error": f"limit must be between 1 and {MAX_PAGE}"}, 400)
    try:
        offset = max(int(q.get("offset") or 0), 0)
    except ValueError:
        return JSONResponse({"error": "offset must be an integer"}, 400)
    if offset > MAX_OFFSET:  # the databases' 64-bit integers
        return JSONResponse({"error": f"offset must be at most {MAX_OFFSET}"}, 400)
    states = [s for s, name in COMFY_STATUS.items() if not wanted or name in wanted]
    workflow_id = q.get("workflow_id")
    store = server.jobs.store
    owner = visible_owner(request)
    if sort_by == "created_at" and not workflow_id:  # the frontend's query: paged in SQL
        page_jobs = await run_in_threadpool(
            lambda: store.list(states=states, listed_only=True, limit=limit, offset=offset,
                               owner=owner, newest_first=order == "desc",
                               oldest_first=order == "asc"))  # fmt: skip
        total = await run_in_threadpool(lambda: store.count(states=states, listed_only=True,
                                                                  owner=owner))  # fmt: skip
        page = [job_object(j) for j in page_jobs]
        return JSONResponse({"jobs": page, "pagination": {
            "offset": offset, "limit": limit, "total": total,
            "has_more": offset + len(page) < total}})  # fmt: skip
    found = await run_in_threadpool(lambda: store.list(states=states, listed_only=True,
                                                       owner=owner))  # fmt: skip
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
    server = server_of(request)
    try:
        job = await run_in_threadpool(server.jobs.get, request.path_params["job_id"])
    except JobNotFound:
        return JSONResponse({"error": "Job not found"}, 404)
    if not may_see(request, job.owner):  # as if absent: ids of others' jobs are not told
        return JSONResponse({"error": "Job not found"}, 404)
    return JSONResponse(job_object(job, detail=True))


async def cancel_job(request: Request) -> Response:
    cancelled = await run_in_threadpool(_cancel, request, request.path_params["job_id"])
    return JSONResponse({"cancelled": cancelled})


async def cancel_jobs(request: Request) -> Response:
    try:
        body = await body_of(request)
    except HTTPError as exc:  # ComfyUI answers this route's errors as a bare string
        return JSONResponse({"error": f"Request body must be valid JSON: {exc.message}"},
                            exc.status)  # fmt: skip
    ids = body.get("job_ids")
    if not isinstance(ids, list):
        return JSONResponse({"error": "job_ids must be a list"}, 400)
    invalid = [i for i in ids if not isinstance(i, str) or not canonical_uuid(i)]
    if invalid:
        return JSONResponse({"error": "job_ids contains invalid id(s)", "invalid_ids": invalid},
                            400)  # fmt: skip
    results = [await run_in_threadpool(_cancel, request, i) for i in ids]
    return JSONResponse({"cancelled": any(results)})


def _cancel(request: Request, job_id: str) -> bool:
    return abort_if(request, job_id, "cancelled", lambda job: not job.state.terminal)


def routes() -> list[BaseRoute]:
    return [
        Route("/api/jobs", list_jobs),
        Route("/api/jobs/cancel", cancel_jobs, methods=["POST"]),
        Route("/api/jobs/{job_id}", get_job),
        Route("/api/jobs/{job_id}/cancel", cancel_job, methods=["POST"]),
    ]
