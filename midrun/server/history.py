"""ComfyUI's history of ended jobs: ``/history`` (listing, hiding) and
``/history/{prompt_id}``, in ComfyUI's shapes."""

from __future__ import annotations

from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute

from midrun.jobs import history
from midrun.jobs.records import Job
from midrun.jobs.states import JobNotFound
from midrun.server.auth import current_user, may_see
from midrun.server.comfy import execution_status, queue_item
from midrun.server.errors import HTTPError
from midrun.server.requests import body_of
from midrun.server.routing import both, server_of


def history_entry(job: Job, registry: Any) -> dict[str, Any]:
    outputs = {k: v for k, v in (job.outputs or {}).items()
               if k not in ("partial", "state") and isinstance(v, dict)}  # fmt: skip
    return {
        "prompt": queue_item(job, registry),
        "outputs": outputs,
        "status": execution_status(job),
        "meta": {n: {"node_id": n, "display_node": n, "parent_node": None, "real_node_id": n}
                 for n in outputs},
    }  # fmt: skip


def _int_param(request: Request, name: str, default: int | None) -> int | None:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise HTTPError(400, "invalid_query", f"{name} must be an integer, not {raw!r}") from None


async def get_history(request: Request) -> Response:
    server = server_of(request)
    max_items = _int_param(request, "max_items", None)
    offset = _int_param(request, "offset", -1)
    ended = await run_in_threadpool(history.ended_jobs, server.jobs)
    ended = [j for j in ended if may_see(request, j.owner)]
    if offset is not None and offset < 0 and max_items is not None:
        offset = len(ended) - max_items
    start = max(offset or 0, 0)
    chosen = ended[start:start + max_items] if max_items is not None else ended[start:]
    return JSONResponse({j.id: history_entry(j, server.registry) for j in chosen})


async def get_history_item(request: Request) -> Response:
    server = server_of(request)
    prompt_id = request.path_params["prompt_id"]
    try:
        job = await run_in_threadpool(server.jobs.get, prompt_id)
    except JobNotFound:
        return JSONResponse({})
    if (job.state not in history.ENDED or job.hidden_at is not None
            or not may_see(request, job.owner)):  # fmt: skip
        return JSONResponse({})
    return JSONResponse({job.id: history_entry(job, server.registry)})


async def post_history(request: Request) -> Response:
    server = server_of(request)
    user = current_user(request)
    body = await body_of(request)
    ids: list[str] | None = None
    if not body.get("clear"):
        delete = body.get("delete") or []
        if not isinstance(delete, list) or not all(isinstance(d, str) for d in delete):
            raise HTTPError(400, "invalid_delete", "'delete' must be a list of prompt ids")
        ids = delete
    await run_in_threadpool(history.hide, server.jobs, ids, None if user.admin else user.name)
    return Response(status_code=200)


def routes() -> list[BaseRoute]:
    return [
        *both("/history", get_history),
        *both("/history", post_history, ["POST"]),
        *both("/history/{prompt_id}", get_history_item),
    ]
