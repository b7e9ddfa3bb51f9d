"""midrun's own HTTP API, under ``/api`` only: live control of jobs (pause, resume, edits
and their undo, abort, previews, debug state, audit log), breakpoints and stepping, where a
job stands and how two runs differ, the global pipeline pause, saved workflows and their
batches, failures, and user management.

Every error is JSON ``{"error": {"type", "message", ...}}``: 400 for a malformed request
(the type names what was wrong), 404 for something that does not exist, 409 for a state
conflict (with the state found). The job system's calls are blocking SQL: they run in the
thread pool. Creators control their own jobs and workflows; admins everything.
"""

from __future__ import annotations

import json
import math
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from midrun.core.errors import MidrunError
from midrun.graph.workflow import Workflow
from midrun.jobs import batches, pipeline, workflows
from midrun.jobs import breakpoints as bps
from midrun.jobs.records import Job
from midrun.jobs.service import Jobs
from midrun.jobs.states import JobState
from midrun.server.auth import User, check_owner, current_user, require_admin
from midrun.server.errors import HTTPError

Endpoint = Callable[[Request], Awaitable[Response]]


# -- plumbing ----------------------------------------------------------------------------


def jobs_of(request: Request) -> Jobs:
    return request.app.state.server.jobs


async def call(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """A blocking job-system call, off the event loop."""
    return await run_in_threadpool(fn, *args, **kwargs)


def ok(data: Any, status: int = 200) -> JSONResponse:
    return JSONResponse(data, status_code=status)


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text} is out of range for a number")
    return value


async def body_of(request: Request, *, default: Any = ...) -> Any:
    """The request's JSON object (``default`` when the body is empty), or a 400."""
    raw = await request.body()
    limit = request.app.state.server.config.max_json_bytes
    if len(raw) > limit:
        raise HTTPError(413, "payload_too_large", f"JSON bodies are limited to {limit} bytes")
    if not raw.strip():
        if default is not ...:
            return default
        raise HTTPError(400, "invalid_json", "The request needs a JSON object body")
    try:
        data = json.loads(raw, parse_constant=_no_constants, parse_float=_finite)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise HTTPError(400, "invalid_json", f"The body is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise HTTPError(400, "invalid_json",
                        f"The body must be a JSON object, not {type(data).__name__}")
    if _has_nul(data):
        raise HTTPError(400, "invalid_json", "Strings in the body must not contain NUL "
                        "characters (\\u0000)")  # fmt: skip
    return data


def _has_nul(value: Any) -> bool:
    """Whether a NUL character hides in a JSON value (PostgreSQL refuses to store one)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if "\x00" in item:
                return True
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


_KINDS: dict[type, str] = {str: "a string", bool: "true or false", int: "an integer",
                           dict: "an object", list: "a list"}  # fmt: skip


def field(data: Mapping[str, Any], name: str, kind: type, *, required: bool = False,
          default: Any = None) -> Any:  # fmt: skip
    """``data[name]`` checked to be of ``kind`` (bools are not integers here)."""
    if name not in data or data[name] is None:
        if required:
            raise HTTPError(400, "missing_field", f"The body needs '{name}' ({_KINDS[kind]})",
                            field=name)  # fmt: skip
        return default
    value = data[name]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise HTTPError(400, "invalid_field", f"'{name}' must be {_KINDS[kind]}, "
                        f"got {json.dumps(value)[:80]}", field=name)  # fmt: skip
    return value


def query_int(request: Request, name: str, *, low: int = 0, high: int = 2**31 - 1
              ) -> int | None:  # fmt: skip
    text = request.query_params.get(name)
    if text is None or text == "":
        return None
    try:
        value = int(text)
    except ValueError:
        raise HTTPError(400, "invalid_query", f"?{name}= must be an integer, got {text!r}",
                        field=name) from None  # fmt: skip
    if not low <= value <= high:
        raise HTTPError(400, "invalid_query", f"?{name}= must be between {low} and {high}",
                        field=name)  # fmt: skip
    return value


def query_time(request: Request, name: str) -> datetime | None:
    text = request.query_params.get(name)
    if not text:
        return None
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise HTTPError(400, "invalid_query", f"?{name}= must be an ISO 8601 time such as "
                        f"2025-01-31T12:00:00Z, got {text!r}", field=name) from None  # fmt: skip
    return value if value.tzinfo else value.replace(tzinfo=UTC)


async def owned_job(request: Request) -> tuple[Job, User]:
    """The path's job, if the caller may control it."""
    job = await call(jobs_of(request).get, request.path_params["job_id"])
    return job, check_owner(request, job.owner, f"Job {job.id}")


async def owned_workflow(request: Request, workflow_id: str) -> tuple[dict[str, Any], User]:
    saved = await call(workflows.get_workflow, jobs_of(request), workflow_id)
    return saved, check_owner(request, saved["owner"], f"Workflow {workflow_id}")


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


def parse_edits(body: Mapping[str, Any]) -> list[tuple[str, str, Any]]:
    """``{"edits": [{node_id, input, value}, ...]}`` or one ``{node_id, input, value}``."""
    items = field(body, "edits", list) if "edits" in body else [body]
    if not items:
        raise HTTPError(400, "invalid_edit", "'edits' is empty: give at least one "
                        "{node_id, input, value}")  # fmt: skip
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


def edits_view(service: Jobs, job_id: str) -> dict[str, Any]:
    """A job's edits: all of them, the pending ones, and per ``node.input`` what changed."""
    job = service.get(job_id)
    edits = service.store.edits(job_id)
    debug = service.debug_state(job_id)
    return {"job_id": job_id, "state": job.state.value, "edits": edits,
            "pending": [e for e in edits if e["status"] == "pending"],
            "modified_params": debug["modified_params_json"]}  # fmt: skip


def apply_edits(service: Jobs, job_id: str, edits: list[tuple[str, str, Any]],
                actor: str) -> dict[str, Any]:  # fmt: skip
    """Make the edits in order; if one is refused, the ones made before it are withdrawn
    (where they still can be) and the refusal says so."""
    made: list[int] = []
    for node_id, input_name, value in edits:
        try:
            made.append(service.edit(job_id, node_id, input_name, value, actor=actor)["edit_id"])
        except MidrunError as exc:
            if made:
                withdrawn = _withdraw(service, job_id, made, actor)
                exc.extra_info.update(withdrawn_edits=withdrawn,
                                      kept_edits=[e for e in made if e not in withdrawn])
            raise
    return {**edits_view(service, job_id), "edit_ids": made}


def _withdraw(service: Jobs, job_id: str, edit_ids: list[int], actor: str) -> list[int]:
    withdrawn = []
    for edit_id in reversed(edit_ids):
        try:
            service.undo(job_id, edit_id, actor=actor)
            withdrawn.append(edit_id)
        except MidrunError:
            pass  # already applied to the running job: it stays (and is reported)
    return withdrawn


async def put_params(request: Request) -> Response:
    edits = parse_edits(await body_of(request))
    job, user = await owned_job(request)
    return ok(await call(apply_edits, jobs_of(request), job.id, edits, user.name))


def undo_edits(service: Jobs, job_id: str, edit_id: int | None, actor: str) -> dict[str, Any]:
    if edit_id is not None and all(e["id"] != edit_id for e in service.store.edits(job_id)):
        raise HTTPError(404, "edit_not_found", f"Job {job_id} has no edit {edit_id}; "
                        f"GET /api/jobs/{job_id}/state lists its edits", edit_id=edit_id)
    undone = service.undo(job_id, edit_id, actor=actor)
    return {**edits_view(service, job_id), "undone": undone}


async def delete_params(request: Request) -> Response:
    job, user = await owned_job(request)
    edit_id = None
    if "edit_id" in request.path_params:
        text = request.path_params["edit_id"]
        if not text.isdigit() or len(text) > 12:
            raise HTTPError(400, "invalid_edit_id", f"Edit ids are integers, got {text!r}")
        edit_id = int(text)
    return ok(await call(undo_edits, jobs_of(request), job.id, edit_id, user.name))


def previews(service: Jobs, job_id: str) -> list[dict[str, Any]]:
    return list(service.debug_state(job_id)["intermediate_previews_json"] or [])


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
    index = await call(previews, service, job.id)
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


def outputs_summary(outputs: Mapping[str, Any] | None) -> dict[str, Any]:
    """Per finished node, what it showed: counts of lists, the rest as is (short)."""
    summary: dict[str, Any] = {}
    for node_id, ui in (outputs or {}).items():
        if isinstance(ui, Mapping):
            summary[node_id] = {k: len(v) if isinstance(v, list) else v for k, v in ui.items()}
        else:
            summary[node_id] = ui
    return summary


def job_state(service: Jobs, job_id: str) -> dict[str, Any]:
    job = service.get(job_id)
    progress = job.progress or {}
    edits = service.store.edits(job_id)
    return {
        "job_id": job.id, "state": job.state.value, "paused_by": job.paused_by,
        "request": job.request, "node": progress.get("node"),
        "class_type": progress.get("class_type"), "position": progress.get("position"),
        "step": progress.get("step"), "total_steps": progress.get("total_steps"),
        "held": progress.get("held"), "checkpoint_step": job.checkpoint_step,
        "pending_edits": [e for e in edits if e["status"] == "pending"],
        "modified_params": service.debug_state(job_id)["modified_params_json"],
        "outputs": outputs_summary(job.outputs), "active_seconds": job.active_time(),
        "error": job.error,
    }  # fmt: skip


async def get_state(request: Request) -> Response:
    job, _ = await owned_job(request)
    return ok(await call(job_state, jobs_of(request), job.id))


def job_parameters(service: Jobs, job_id: str) -> list[dict[str, Any]]:
    """The job's parameters as it will run: pending edits applied, each edited one with
    its first value (``original``) and, while pending, the edit's id (``edit_id``)."""
    from midrun.graph.parameters import extract_parameters

    job = service.get(job_id)
    if job.kind != "workflow":
        return []
    params = extract_parameters(Workflow.from_api(current_workflow(service, job)),
                                service.registry)  # fmt: skip
    modified = service.debug_state(job_id)["modified_params_json"]
    pending = {(e["node_id"], e["input_name"]): e["id"]
               for e in service.store.edits(job_id, status="pending")}  # fmt: skip
    for param in params:
        key = (param["node_id"], param["field"])
        entry = modified.get(f"{key[0]}.{key[1]}")
        if isinstance(entry, dict) and "old" in entry:
            param["original"] = entry["old"]
        if key in pending:
            param["edit_id"] = pending[key]
    return params


async def get_job_parameters(request: Request) -> Response:
    job, _ = await owned_job(request)
    return ok(await call(job_parameters, jobs_of(request), job.id))


def current_workflow(service: Jobs, job: Job) -> dict[str, Any]:
    """The job's workflow with its pending edits applied (what it will run with)."""
    prompt = json.loads(json.dumps(job.workflow))
    for e in service.store.edits(job.id, status="pending"):
        prompt.setdefault(e["node_id"], {}).setdefault("inputs", {})[e["input_name"]] = e["new"]
    return prompt


def original_workflow(service: Jobs, job: Job, current: dict[str, Any]) -> dict[str, Any]:
    """The workflow as submitted: every edited input back to its first old value."""
    prompt = json.loads(json.dumps(current))
    for key, entry in service.debug_state(job.id)["modified_params_json"].items():
        node_id, _, input_name = key.rpartition(".")
        if node_id in prompt:
            prompt[node_id].setdefault("inputs", {})[input_name] = entry.get("old")
    return prompt


def workflow_diff(a: Mapping[str, Any], b: Mapping[str, Any]) -> dict[str, Any]:
    changed = []
    for node_id in sorted(set(a) & set(b)):
        left, right = a[node_id].get("inputs", {}), b[node_id].get("inputs", {})
        for name in sorted(set(left) | set(right)):
            if left.get(name) != right.get(name):
                changed.append({"node_id": node_id, "input": name, "from": left.get(name),
                                "to": right.get(name)})  # fmt: skip
    return {"changed": changed, "added_nodes": sorted(set(b) - set(a)),
            "removed_nodes": sorted(set(a) - set(b))}  # fmt: skip


def job_diff(service: Jobs, left: Job, right: Job | None) -> dict[str, Any]:
    if right is None:
        current = current_workflow(service, left)
        diff = workflow_diff(original_workflow(service, left, current), current)
        return {"from": {"job_id": left.id, "version": "original"},
                "to": {"job_id": left.id, "version": "current"}, **diff}  # fmt: skip
    diff = workflow_diff(current_workflow(service, left), current_workflow(service, right))
    a, b = left.parameters_used or {}, right.parameters_used or {}
    params = {k: {"from": a.get(k), "to": b.get(k)} for k in sorted(set(a) | set(b))
              if a.get(k) != b.get(k)}  # fmt: skip
    return {"from": {"job_id": left.id}, "to": {"job_id": right.id}, **diff,
            "parameters": params}  # fmt: skip


async def get_diff(request: Request) -> Response:
    job, _ = await owned_job(request)
    service = jobs_of(request)
    names = [request.query_params.get("from") or None, request.query_params.get("to") or None]
    if names == [None, None]:
        return ok(await call(job_diff, service, job, None))
    pair = []
    for name in (n or job.id for n in names):
        other = job if name == job.id else await call(service.get, name)
        check_owner(request, other.owner, f"Job {other.id}")
        pair.append(other)
    return ok(await call(job_diff, service, pair[0], pair[1]))


# -- breakpoints and stepping ------------------------------------------------------------


async def post_job_breakpoint(request: Request) -> Response:
    body = await body_of(request)
    job, user = await owned_job(request)
    created = await call(bps.create, jobs_of(request), body, job_id=job.id, actor=user.name)
    return ok(created, 201)


def applying_breakpoints(service: Jobs, job: Job) -> list[dict[str, Any]]:
    own = bps.list_breakpoints(service, job_id=job.id)
    if job.workflow_id is None:
        return own
    return own + bps.list_breakpoints(service, workflow_id=job.workflow_id)


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
    return ok(job_json(stepped))


# -- the pipeline ------------------------------------------------------------------------


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


# -- saved workflows and batches ---------------------------------------------------------


async def post_workflow(request: Request) -> Response:
    body = await body_of(request)
    name = field(body, "name", str, required=True)
    if not 1 <= len(name) <= 200:
        raise HTTPError(400, "invalid_field", "'name' is 1 to 200 characters", field="name")
    document = field(body, "workflow", dict, required=True)
    defaults = field(body, "default_parameters", dict, default={})
    user = current_user(request)
    saved = await call(workflows.save_workflow, jobs_of(request), name, document,
                       owner=user.name, default_parameters=defaults)  # fmt: skip
    return ok(saved, 201)


async def list_workflows(request: Request) -> Response:
    user = current_user(request)
    owner = None if user.admin else user.name
    return ok(await call(workflows.list_workflows, jobs_of(request), owner))


async def get_workflow(request: Request) -> Response:
    saved, _ = await owned_workflow(request, request.path_params["workflow_id"])
    return ok(saved)


async def get_parameters(request: Request) -> Response:
    saved, _ = await owned_workflow(request, request.path_params["workflow_id"])
    return ok(await call(workflows.workflow_parameters, jobs_of(request), saved["id"]))


async def execute_workflow(request: Request) -> Response:
    body = await body_of(request, default={})
    parameters = field(body, "parameters", dict, default={})
    saved, user = await owned_workflow(request, request.path_params["workflow_id"])
    job = await call(workflows.execute_workflow, jobs_of(request), saved["id"], parameters,
                     owner=user.name)  # fmt: skip
    return ok(job_json(job), 201)


def check_variation(i: int, item: Any) -> dict[str, Any]:
    """One variation's shape, checked before any job is built."""
    where = f"variations[{i}]"
    if not isinstance(item, dict):
        raise HTTPError(400, "invalid_variation", f"{where} must be an object")
    kind = item.get("type")
    for name in ("node_id", "field"):
        if not isinstance(item.get(name), str):
            raise HTTPError(400, "invalid_variation", f"{where} needs '{name}' (a string)")
    if kind == "seed":
        if item.get("mode", "increment") not in ("random", "increment", "fixed"):
            raise HTTPError(400, "invalid_variation",
                            f"{where}.mode is random, increment or fixed")
        for name in ("start", "batch_seed"):
            _integer(item, name, where)
    elif kind == "cycle":
        if not isinstance(item.get("values"), list) or not item["values"]:
            raise HTTPError(400, "invalid_variation", f"{where}.values must be a non-empty list")
    elif kind == "sweep":
        _sweep_length(item, where)
    else:
        raise HTTPError(400, "invalid_variation",
                        f"{where}.type is seed, cycle or sweep, got {kind!r}")
    return item


def _integer(item: Mapping[str, Any], name: str, where: str) -> None:
    value = item.get(name, 0)
    if not isinstance(value, int) or isinstance(value, bool):
        raise HTTPError(400, "invalid_variation", f"{where}.{name} must be an integer")


def _sweep_length(item: Mapping[str, Any], where: str) -> None:
    values = [item.get(n) for n in ("start", "stop", "step")]
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        raise HTTPError(400, "invalid_variation", f"{where} needs numbers start, stop, step")
    start, stop, step = values
    span = (stop - start) / step if step else math.inf
    if not math.isfinite(span) or not 0 <= span < batches.MAX_BATCH:
        raise HTTPError(400, "invalid_variation", f"{where}: a sweep from {start} to {stop} "
                        f"by {step} must reach its end in at most {batches.MAX_BATCH} values")


def make_batch(service: Jobs, saved: dict[str, Any], parameters: dict[str, Any],
               count: int | None, variations: list[Any], owner: str) -> dict[str, Any]:  # fmt: skip
    from midrun.graph.parameters import apply_parameters

    document = saved["workflow"]
    used = {**(saved["default_parameters"] or {}), **parameters}
    if used:
        document = apply_parameters(Workflow.from_api(document), service.registry,
                                    used).to_api()  # fmt: skip
    return batches.submit_batch(service, document, count=count, variations=variations,
                                owner=owner, workflow_id=saved["id"])  # fmt: skip


async def post_batch(request: Request) -> Response:
    body = await body_of(request)
    count = field(body, "count", int)
    if count is not None and not 1 <= count <= batches.MAX_BATCH:
        raise HTTPError(400, "invalid_field", f"'count' is 1 to {batches.MAX_BATCH}",
                        field="count")  # fmt: skip
    variations = [check_variation(i, v) for i, v in
                  enumerate(field(body, "variations", list, default=[]))]  # fmt: skip
    parameters = field(body, "parameters", dict, default={})
    saved, user = await owned_workflow(request, request.path_params["workflow_id"])
    batch = await call(make_batch, jobs_of(request), saved, parameters, count, variations,
                       user.name)  # fmt: skip
    return ok(batch, 201)


async def owned_batch(request: Request) -> tuple[dict[str, Any], User]:
    batch = await call(batches.get_batch, jobs_of(request), request.path_params["batch_id"])
    return batch, check_owner(request, batch["owner"], f"Batch {batch['id']}")


async def get_batch(request: Request) -> Response:
    batch, _ = await owned_batch(request)
    return ok(batch)


async def stop_batch(request: Request) -> Response:
    body = await body_of(request, default={})
    include_running = field(body, "include_running", bool, default=False)
    batch, user = await owned_batch(request)
    return ok(await call(batches.stop_batch, jobs_of(request), batch["id"],
                         include_running=include_running, actor=user.name))  # fmt: skip


# -- failures ----------------------------------------------------------------------------


def own_failures(service: Jobs, user: User, **filters: Any) -> list[dict[str, Any]]:
    found = service.failures(**filters)
    if user.admin:
        return found
    mine = {j.id for j in service.list(owner=user.name,
                                       states=[JobState.FAILED, JobState.ABORTED])}
    return [f for f in found if f["id"] in mine]


async def get_failures(request: Request) -> Response:
    user = current_user(request)
    filters = {"reason": request.query_params.get("reason") or None,
               "workflow_id": request.query_params.get("workflow_id") or None,
               "since": query_time(request, "since"), "until": query_time(request, "until"),
               "limit": query_int(request, "limit", low=1, high=1000) or 100}  # fmt: skip
    return ok(await call(own_failures, jobs_of(request), user, **filters))


# -- users -------------------------------------------------------------------------------


async def list_users(request: Request) -> Response:
    require_admin(request)
    return ok(await call(request.app.state.server.users.list))


async def create_user(request: Request) -> Response:
    require_admin(request)
    body = await body_of(request)
    name = field(body, "name", str, required=True)
    role = field(body, "role", str, default="creator")
    token = await call(request.app.state.server.users.create, name, role)
    return ok({"name": name, "role": role, "token": token}, 201)


async def delete_user(request: Request) -> Response:
    require_admin(request)
    name = request.path_params["name"]
    if not await call(request.app.state.server.users.delete, name):
        raise HTTPError(404, "user_not_found", f"No user {name!r}; GET /api/auth/users lists "
                        "them")  # fmt: skip
    return ok({"deleted": name})


async def openapi_json(request: Request) -> Response:
    from midrun.server.openapi import document

    return ok(document())


# -- the table ---------------------------------------------------------------------------

ROUTES: list[tuple[str, str, Endpoint]] = [
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
    ("POST", "/api/jobs/{job_id}/step", step_job),
    ("POST", "/api/jobs/{job_id}/breakpoints", post_job_breakpoint),
    ("GET", "/api/jobs/{job_id}/breakpoints", get_job_breakpoints),
    ("POST", "/api/workflows/{workflow_id}/breakpoints", post_workflow_breakpoint),
    ("GET", "/api/workflows/{workflow_id}/breakpoints", get_workflow_breakpoints),
    ("DELETE", "/api/breakpoints/{bp_id}", delete_breakpoint),
    ("PATCH", "/api/breakpoints/{bp_id}", patch_breakpoint),
    ("GET", "/api/pipeline", get_pipeline),
    ("POST", "/api/pipeline/pause", pause_pipeline),
    ("POST", "/api/pipeline/resume", resume_pipeline),
    ("POST", "/api/workflows", post_workflow),
    ("GET", "/api/workflows", list_workflows),
    ("GET", "/api/workflows/{workflow_id}", get_workflow),
    ("GET", "/api/workflows/{workflow_id}/parameters", get_parameters),
    ("POST", "/api/workflows/{workflow_id}/execute", execute_workflow),
    ("POST", "/api/workflows/{workflow_id}/batch", post_batch),
    ("GET", "/api/batches/{batch_id}", get_batch),
    ("POST", "/api/batches/{batch_id}/stop", stop_batch),
    ("GET", "/api/failures", get_failures),
    ("GET", "/api/auth/users", list_users),
    ("POST", "/api/auth/users", create_user),
    ("DELETE", "/api/auth/users/{name}", delete_user),
    ("GET", "/api/openapi.json", openapi_json),
]


def routes() -> list[BaseRoute]:
    """One Route per path, with each of its methods."""
    by_path: dict[str, dict[str, Endpoint]] = {}
    for method, path, endpoint in ROUTES:
        by_path.setdefault(path, {})[method] = _checked(endpoint)
    return [Route(path, _dispatch(methods), methods=list(methods))
            for path, methods in by_path.items()]  # fmt: skip


def _checked(endpoint: Endpoint) -> Endpoint:
    """Refuses NUL characters in the path and query string (no id or filter has one)."""

    async def checked(request: Request) -> Response:
        values = [*request.path_params.values(), *request.query_params.values()]
        if any(isinstance(v, str) and "\x00" in v for v in values):
            raise HTTPError(400, "invalid_request", "NUL characters are not accepted in the "
                            "path or the query string")  # fmt: skip
        return await endpoint(request)

    return checked


def _dispatch(methods: dict[str, Endpoint]) -> Endpoint:
    if len(methods) == 1:
        return next(iter(methods.values()))

    async def endpoint(request: Request) -> Response:
        method = "GET" if request.method == "HEAD" else request.method
        return await methods[method](request)

    return endpoint
