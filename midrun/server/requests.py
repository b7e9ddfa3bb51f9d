"""What every route of midrun's ``/api`` does with its request: read the JSON body and its
fields and the query values (a 400 naming what was wrong), find the job or workflow the
path names if the caller may control it, and run the blocking job-system call off the
event loop."""

from __future__ import annotations

import json
import math
import re
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


MAX_DEPTH = 64  # nesting of a JSON body (a canvas workflow with subgraphs is ~12 deep)
_SURROGATE = re.compile("[\ud800-\udfff]")  # a code unit JSON decoding left unpaired


class _NotANumber:
    """What a body said where JSON has no number (``NaN``, ``Infinity``, ``1e999``): kept
    as a marker while parsing so the refusal can name the field it is in."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text


def _number(text: str) -> float | _NotANumber:
    value = float(text)
    return value if math.isfinite(value) else _NotANumber(text)


def parse_json(raw: bytes, limit: int) -> Any:
    """Strict JSON, as every route reads it: at most ``limit`` bytes (413), UTF-8, numbers
    finite, no NUL characters or unpaired surrogates in strings and keys (PostgreSQL
    cannot store them, and a stored NaN would break every later read), nested at most
    ``MAX_DEPTH`` deep. A refusal is a 400 that names the field."""
    if len(raw) > limit:
        raise HTTPError(413, "payload_too_large", f"JSON bodies are limited to {limit} bytes",
                        limit=limit)  # fmt: skip
    try:
        data = json.loads(raw, parse_constant=_NotANumber, parse_float=_number)
    except RecursionError:
        raise HTTPError(400, "invalid_json", f"The body is nested more than {MAX_DEPTH} "
                        "levels deep", limit=MAX_DEPTH) from None  # fmt: skip
    except (ValueError, UnicodeDecodeError) as exc:
        raise HTTPError(400, "invalid_json", f"The body is not valid JSON: {exc}") from None
    _check_values(data)
    return data


def _check_values(data: Any) -> None:
    stack: list[tuple[Any, str, int]] = [(data, "", 0)]
    while stack:
        value, where, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise HTTPError(400, "invalid_json", f"The body is nested more than {MAX_DEPTH} "
                            f"levels deep (at {where})", field=where, limit=MAX_DEPTH)  # fmt: skip
        if isinstance(value, str):
            _check_text(value, where or "the body")
        elif isinstance(value, _NotANumber):
            raise HTTPError(400, "invalid_json", f"{where or 'The body'} is {value.text}: JSON "
                            "numbers must be finite", field=where)  # fmt: skip
        elif isinstance(value, dict):
            for key, item in value.items():
                path = f"{where}.{key}" if where else key
                _check_text(key, f"the key {path[:80]!r}")
                stack.append((item, path, depth + 1))
        elif isinstance(value, list):
            stack.extend((item, f"{where}[{i}]", depth + 1) for i, item in enumerate(value))


def _check_text(text: str, where: str) -> None:
    if "\x00" in text:
        raise HTTPError(400, "invalid_json", f"{where} contains a NUL character (\\u0000), "
                        "which cannot be stored", field=where)  # fmt: skip
    if _SURROGATE.search(text):
        raise HTTPError(400, "invalid_json", f"{where} contains an unpaired UTF-16 surrogate "
                        "(\\ud800-\\udfff), which is not text", field=where)  # fmt: skip


async def body_of(request: Request, *, default: Any = ..., expect: type | None = dict) -> Any:
    """The request's JSON (an object unless ``expect`` says otherwise; ``default`` when
    the body is empty), read by :func:`parse_json`, or a 4xx saying what was wrong."""
    raw = await request.body()
    if not raw.strip():
        if default is not ...:
            return default
        raise HTTPError(400, "invalid_json", "The request needs a JSON object body")
    data = parse_json(raw, request.app.state.server.config.max_json_bytes)
    if expect is not None and not isinstance(data, expect):
        kind = "a JSON object" if expect is dict else _KINDS.get(expect, expect.__name__)
        raise HTTPError(400, "invalid_json",
                        f"The body must be {kind}, not {type(data).__name__}")
    return data


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
