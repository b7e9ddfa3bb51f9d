"""Saved workflows under ``/api``: save, list, read, their parameters, run one, run a
batch of one with variations, and the batches themselves (read, stop)."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from midrun.graph.variations import MAX_BATCH, parse_variation
from midrun.jobs import batches, workflows
from midrun.server.auth import User, check_owner, current_user
from midrun.server.errors import HTTPError
from midrun.server.requests import body_of, call, field, jobs_of, ok, owned_workflow
from midrun.server.routing import Operation


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
    return ok(job.to_dict(), 201)


async def post_batch(request: Request) -> Response:
    body = await body_of(request)
    count = field(body, "count", int)
    if count is not None and not 1 <= count <= MAX_BATCH:
        raise HTTPError(400, "invalid_field", f"'count' is 1 to {MAX_BATCH}", field="count")
    variations = [parse_variation(v, f"variations[{i}]") for i, v in
                  enumerate(field(body, "variations", list, default=[]))]  # fmt: skip
    parameters = field(body, "parameters", dict, default={})
    saved, user = await owned_workflow(request, request.path_params["workflow_id"])
    batch = await call(workflows.submit_workflow_batch, jobs_of(request), saved, parameters,
                       count=count, variations=variations, owner=user.name)  # fmt: skip
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


ROUTES: list[Operation] = [
    ("POST", "/api/workflows", post_workflow),
    ("GET", "/api/workflows", list_workflows),
    ("GET", "/api/workflows/{workflow_id}", get_workflow),
    ("GET", "/api/workflows/{workflow_id}/parameters", get_parameters),
    ("POST", "/api/workflows/{workflow_id}/execute", execute_workflow),
    ("POST", "/api/workflows/{workflow_id}/batch", post_batch),
    ("GET", "/api/batches/{batch_id}", get_batch),
    ("POST", "/api/batches/{batch_id}/stop", stop_batch),
]
