"""midrun's own HTTP API, under ``/api`` only: live control of jobs (pause, resume, edits
and their undo, abort, previews, debug state, audit log), where a job stands and how two
runs differ, and failures, here; breakpoints and stepping, saved workflows and batches, the
global pipeline pause and users in their own modules. :data:`ROUTES` is the whole table.

Every error is JSON ``{"error": {"type", "message", ...}}``: 400 for a malformed request
(the type names what was wrong), 404 for something that does not exist, 409 for a state
conflict (with the state found). The job system's calls are blocking SQL: they run in the
thread pool. Creators control their own jobs and workflows; admins everything.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute

from midrun.jobs import diffs, views
from midrun.jobs.edits import EditRequest, make_edits, undo_edits
from midrun.jobs.records import Job
from midrun.server import breakpoints, openapi, pipeline, users, workflows
from midrun.server.auth import check_owner, current_user
from midrun.server.errors import HTTPError
from midrun.server.requests import (
    body_of,
    call,
    field,
    jobs_of,
    ok,
    owned_job,
    query_int,
    query_time,
)
from midrun.server.routing import Operation, table


def job_json(job: Job) -> dict[str, Any]:
    return job.to_dict()


# -- job control -------------------------------------------------------------------------


async def pause_job(request: Request) -> Response:
    job, user = await owned_job(request)
    return ok(job_json(await call(jobs_of(request).pause, job.id, actor=user.name)))


async def resume_job(request: Request) -> Response:
    body = await body_of(request, default={})
    front = field(body, "front", bool)
    job, user = await owned_job(request)
    return ok(job_json(await call(jobs_of(request).resume, job.id, actor=user.name,
                                  front=front)))  # fmt: skip


async def abort_job(request: Request) -> Response:
    body = await body_of(request, default={})
    reason = field(body, "reason", str, default="")
    job, user = await owned_job(request)
    return ok(job_json(await call(jobs_of(request).abort, job.id, reason, actor=user.name)))


MAX_EDITS = 64  # edits in one request


def parse_edits(body: Mapping[str, Any]) -> list[EditRequest]:
    """``{"edits": [{node_id, input, value}, ...]}``, one ``{node_id, input, value}``, or
    ComfyUI's shape of a prompt's inputs, ``{node_id: {input: value, ...}, ...}``."""
    if body and "edits" not in body and not set(body) & {"node_id", "input", "value"} \
            and all(isinstance(v, dict) for v in body.values()):  # fmt: skip
        body = {"edits": [{"node_id": node_id, "input": name, "value": value}
                          for node_id, inputs in body.items()
                          for name, value in inputs.items()]}  # fmt: skip
    items = field(body, "edits", list) if "edits" in body else [body]
    if not items:
        raise HTTPError(400, "invalid_edit", "'edits' is empty: give at least one "
                        "{node_id, input, value}")  # fmt: skip
    if len(items) > MAX_EDITS:
        # each edit is checked against the checkpoint with every pending edit replayed
        raise HTTPError(413, "too_many_edits", f"{len(items)} edits in one request; at most "
                        f"{MAX_EDITS} are taken at once", limit=MAX_EDITS)  # fmt: skip
    edits = []
    for i, item in enumerate(items):
        where = f"edits[{i}]" if "edits" in body else "the body"
        if not isinstance(item, dict):
            raise HTTPError(400, "invalid_edit", f"{where} must be an object "
                            "{node_id, input, value}")  # fmt: skip
        unknown = sorted(set(item) - {"node_id", "input", "value"})
        if unknown:
            raise HTTPError(400, "invalid_edit", f"{where} has unknown fields {unknown}; an "
                            "edit is {node_id, input, value}")  # fmt: skip
        if "value" not in item:
            raise HTTPError(400, "invalid_edit", f"{where} needs 'value' (the new value)")
        edits.append((field(item, "node_id", str, required=True),
                       field(item, "input", str, required=True), item["value"]))  # fmt: skip
    return edits


async def put_params(request: Request) -> Response:
    edits = parse_edits(await body_of(request))
    job, user = await owned_job(request)
    return ok(await call(make_edits, jobs_of(request), job.id, edits, user.name))


async def delete_params(request: Request) -> Response:
    job, user = await owned_job(request)
    edit_id = None
    if "edit_id" in request.path_params:
        text = request.path_params["edit_id"]
        if not text.isdigit() or len(text) > 12:
            raise HTTPError(400, "invalid_edit_id", f"Edit ids are integers, got {text!r}")
        edit_id = int(text)
    return ok(await call(undo_edits, jobs_of(request), job.id, edit_id, user.name))


def _wants_json(request: Request) -> bool:
    fmt = request.query_params.get("format")
    if fmt:
        return fmt == "json"
    accept = request.headers.get("accept", "")
    return "application/json" in accept and "image/" not in accept


async def get_preview(request: Request) -> Response:
    job, _ = await owned_job(request)
    fmt = request.query_params.get("format")
    if fmt not in (None, "", "json", "image"):
        raise HTTPError(400, "invalid_query", f"?format= is 'json' or 'image', got {fmt!r}")
    step = query_int(request, "step")
    service = jobs_of(request)
    index = await call(views.previews, service, job.id)
    if _wants_json(request):
        return ok({"job_id": job.id, "previews": index})
    chosen = [e for e in index if step is None or e.get("step") == step]
    if not chosen:
        at = f" at step {step}" if step is not None else ""
        have = sorted({e.get("step") for e in index if e.get("step") is not None})
        raise HTTPError(404, "preview_not_found", f"Job {job.id} has no preview{at}; "
                        + (f"steps with previews: {have}" if have else "previews are saved "
                           "while a sampler runs (GET ?format=json lists them)"),
                        job_id=job.id)  # fmt: skip
    entry = chosen[-1]
    try:
        data = await call(service.artifacts.get, entry["file"])
    except (FileNotFoundError, KeyError):
        raise HTTPError(404, "preview_not_found", f"The preview of step {entry.get('step')} "
                        "was not kept (completed jobs keep their latest ones)") from None
    return Response(data, media_type=entry.get("mime") or "application/octet-stream",
                    headers={"x-midrun-step": str(entry.get("step"))})  # fmt: skip


async def get_debug(request: Request) -> Response:
    job, _ = await owned_job(request)
    return ok(await call(jobs_of(request).debug_state, job.id))


async def get_events(request: Request) -> Response:
    job, _ = await owned_job(request)
    return ok(await call(jobs_of(request).events, job.id))


# -- where a job stands, and how runs differ -----------------------------------------------


async def get_state(request: Request) -> Response:
    job, _ = await owned_job(request)
    return ok(await call(views.job_state, jobs_of(request), job.id))


async def get_job_parameters(request: Request) -> Response:
    job, _ = await owned_job(request)
    return ok(await call(views.job_parameters, jobs_of(request), job.id))


async def get_diff(request: Request) -> Response:
    job, _ = await owned_job(request)
    service = jobs_of(request)
    names = [request.query_params.get("from") or None, request.query_params.get("to") or None]
    if names == [None, None]:
        return ok(await call(diffs.job_diff, service, job, None))
    pair = []
    for name in (n or job.id for n in names):
        other = job if name == job.id else await call(service.get, name)
        check_owner(request, other.owner, f"Job {other.id}")
        pair.append(other)
    return ok(await call(diffs.job_diff, service, pair[0], pair[1]))


# -- failures ----------------------------------------------------------------------------


async def get_failures(request: Request) -> Response:
    user = current_user(request)
    filters = {"reason": request.query_params.get("reason") or None,
               "workflow_id": request.query_params.get("workflow_id") or None,
               "since": query_time(request, "since"), "until": query_time(request, "until"),
               "limit": query_int(request, "limit", low=1, high=1000) or 100}  # fmt: skip
    owner = None if user.admin else user.name
    return ok(await call(views.failures_of, jobs_of(request), owner, **filters))


# -- the table ---------------------------------------------------------------------------

JOB_ROUTES: list[Operation] = [
    ("POST", "/api/jobs/{job_id}/pause", pause_job),
    ("POST", "/api/jobs/{job_id}/resume", resume_job),
    ("POST", "/api/jobs/{job_id}/abort", abort_job),
    ("PUT", "/api/jobs/{job_id}/params", put_params),
    ("DELETE", "/api/jobs/{job_id}/params", delete_params),
    ("DELETE", "/api/jobs/{job_id}/params/{edit_id}", delete_params),
    ("GET", "/api/jobs/{job_id}/preview", get_preview),
    ("GET", "/api/jobs/{job_id}/debug", get_debug),
    ("GET", "/api/jobs/{job_id}/events", get_events),
    ("GET", "/api/jobs/{job_id}/state", get_state),
    ("GET", "/api/jobs/{job_id}/parameters", get_job_parameters),
    ("GET", "/api/jobs/{job_id}/diff", get_diff),
]

#: Every operation of midrun's ``/api`` (what :mod:`midrun.server.openapi` describes).
ROUTES: list[Operation] = [
    *JOB_ROUTES,
    *breakpoints.ROUTES,
    *pipeline.ROUTES,
    *workflows.ROUTES,
    ("GET", "/api/failures", get_failures),
    *users.ROUTES,
    ("GET", "/api/openapi.json", openapi.openapi_json),
]


def routes() -> list[BaseRoute]:
    """midrun's ``/api``: one Route per path, with each of its methods."""
    return table(ROUTES)
