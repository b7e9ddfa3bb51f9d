"""Errors as JSON: ``{"error": {"type", "message", ...}}`` with a status that says what
kind of mistake it was; state conflicts are 409 and carry the state found."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse

from midrun.core.errors import MidrunError

# error type -> HTTP status (anything else a client caused is a 400)
STATUS = {
    "job_not_found": 404,
    "workflow_not_found": 404,
    "batch_not_found": 404,
    "edit_not_found": 404,
    "breakpoint_not_found": 404,
    "not_found": 404,
    "job_state_conflict": 409,
    "pipeline_state_conflict": 409,
    "pipeline_pause_failed": 409,
    "unauthorized": 401,
    "forbidden": 403,
    "payload_too_large": 413,
}


class HTTPError(MidrunError):
    """An error with its own status (the server's, not the engine's)."""

    def __init__(self, status: int, type_: str, message: str, **extra: Any) -> None:
        super().__init__(message, **extra)
        self.status = status
        self.type = type_


def error_body(exc: MidrunError) -> dict[str, Any]:
    body = {"type": exc.type, "message": exc.message}
    if exc.details:
        body["details"] = exc.details
    body.update({k: v for k, v in exc.extra_info.items() if k not in body})
    return {"error": body}


def status_of(exc: MidrunError) -> int:
    return getattr(exc, "status", None) or STATUS.get(exc.type, 400)


async def midrun_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, MidrunError)
    return JSONResponse(error_body(exc), status_code=status_of(exc))


def error(status: int, type_: str, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": {"type": type_, "message": message, **extra}}, status)


async def json_body(request: Request, *, default: Any = ..., expect: type | None = dict) -> Any:
    """The request's JSON, or a 400 that says what was wrong with it."""
    raw = await request.body()
    if not raw.strip():
        if default is not ...:
            return default
        raise HTTPError(400, "invalid_json", "The request needs a JSON body")
    import json

    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise HTTPError(400, "invalid_json", f"The body is not valid JSON: {exc}") from exc
    if expect is not None and not isinstance(data, expect):
        kind = "object" if expect is dict else expect.__name__
        raise HTTPError(400, "invalid_json", f"The body must be a JSON {kind}")
    return data
