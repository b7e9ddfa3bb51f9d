"""What every route of midrun's ``/api`` does with its request: read the JSON body and its
fields and the query values (a 400 naming what was wrong), find the job or workflow the
path names if the caller may control it, and run the blocking job-system call off the
event loop."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse

from midrun.jobs import workflows
from midrun.jobs.records import Job
from midrun.jobs.service import Jobs
from midrun.server.auth import User, check_owner
from midrun.server.errors import HTTPError


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
