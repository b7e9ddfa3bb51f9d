"""Errors as JSON: ``{"error": {"type", "message", ...}}`` with a status that says what
kind of mistake it was; state conflicts are 409 and carry the state found."""

from __future__ import annotations

import logging
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse

from midrun.core.errors import InsufficientStorage, MidrunError, disk_full

# error type -> HTTP status (anything else a client caused is a 400)
STATUS = {
    "job_not_found": 404,
    "workflow_not_found": 404,
    "batch_not_found": 404,
    "edit_not_found": 404,
    "breakpoint_not_found": 404,
    "not_found": 404,
    "job_state_conflict": 409,
    "duplicate_prompt_id": 409,
    "pipeline_state_conflict": 409,
    "pipeline_pause_failed": 409,
    "unauthorized": 401,
    "forbidden": 403,
    "payload_too_large": 413,
    "too_many_edits": 413,
    "insufficient_storage": 507,
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


# -- faults that are not the caller's ---------------------------------------------------

log = logging.getLogger("midrun.server")
def insufficient_storage(what: str) -> InsufficientStorage:
    return InsufficientStorage(f"{what}: the server's disk is full; nothing was changed. "
                               "Free space on it and try again")


async def server_fault(request: Request, exc: Exception) -> JSONResponse:
    """Anything a route did not turn into an error of its own: a full disk is a 507 (and
    what the request would have written is not there); anything else is logged and
    answered as JSON, never as a bare traceback."""
    if disk_full(exc):
        return await midrun_error(request, insufficient_storage(f"{request.method} "
                                                                f"{request.url.path}"))  # fmt: skip
    log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
    return error(500, "internal_error", f"The server failed on {request.method} "
                 f"{request.url.path} ({type(exc).__name__}); the error is in its log")  # fmt: skip
