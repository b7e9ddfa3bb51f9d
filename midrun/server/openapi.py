"""The OpenAPI 3.1 document of midrun's own ``/api`` routes
(:data:`midrun.server.control.ROUTES`), served at ``GET /api/openapi.json``. Written by
hand: each operation names its parameters, its JSON body schema and its responses, errors
included (``{"error": {"type", "message"}}``). The ComfyUI-compatible routes are
ComfyUI's API and are not described here."""

from __future__ import annotations

from functools import cache
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from midrun import __version__ as VERSION

JSON = "application/json"
S = "#/components/schemas/"


def ref(name: str) -> dict[str, str]:
    return {"$ref": S + name}


def obj(properties: dict[str, Any], required: tuple[str, ...] = (), *,
        extra: bool = True) -> dict[str, Any]:  # fmt: skip
    schema: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        schema["required"] = list(required)
    if not extra:
        schema["additionalProperties"] = False
    return schema


def array(items: dict[str, Any]) -> dict[str, Any]:
    return {"type": "array", "items": items}


STRING = {"type": "string"}
NULLABLE_STRING = {"type": ["string", "null"]}
INTEGER = {"type": "integer"}
BOOLEAN = {"type": "boolean"}
ANY: dict[str, Any] = {}

# fmt: off
SCHEMAS: dict[str, Any] = {
    "Error": obj({"error": obj({"type": STRING, "message": STRING}, ("type", "message"))},
                 ("error",)),
    "JobState": {"type": "string", "enum": ["queued", "running", "pausing", "paused",
                                            "completed", "failed", "aborted"]},
    "Job": obj({"id": STRING, "state": ref("JobState"), "number": INTEGER, "kind": STRING,
                "workflow": {"type": "object"}, "owner": NULLABLE_STRING,
                "paused_by": NULLABLE_STRING, "request": NULLABLE_STRING,
                "workflow_id": NULLABLE_STRING, "batch_id": NULLABLE_STRING,
                "parameters_used": {"type": ["object", "null"]},
                "checkpoint_step": {"type": ["integer", "null"]},
                "progress": {"type": ["object", "null"]}}, ("id", "state")),
    "Edit": obj({"node_id": {"type": "string", "minLength": 1},
                 "input": {"type": "string", "minLength": 1}, "value": ANY},
                ("node_id", "input", "value"), extra=False),
    "EditRequest": {"oneOf": [
        obj({"edits": {**array(ref("Edit")), "minItems": 1}}, ("edits",), extra=False),
        ref("Edit"),
        {"type": "object", "minProperties": 1,  # ComfyUI's shape: {node_id: {input: value}}
         "propertyNames": {"not": {"enum": ["edits", "node_id", "input", "value"]}},
         "additionalProperties": {"type": "object", "minProperties": 1}}]},
    "EditRecord": obj({"id": INTEGER, "job_id": STRING, "node_id": STRING,
                       "input_name": STRING, "old": ANY, "new": ANY, "status": STRING,
                       "step": {"type": ["integer", "null"]}}),
    "Edits": obj({"job_id": STRING, "state": ref("JobState"),
                  "edits": array(ref("EditRecord")), "pending": array(ref("EditRecord")),
                  "modified_params": {"type": "object"}, "edit_ids": array(INTEGER),
                  "undone": array(ref("EditRecord"))},
                 ("job_id", "state", "edits", "pending", "modified_params")),
    "BreakpointInput": obj({
        "node_id": {"type": "string", "minLength": 1},
        "position": {"type": "string", "enum": ["before", "after", "step"]},
        "step": {"type": "integer", "minimum": 1},
        "condition": {"type": "string", "description": "a safe expression, e.g. step >= 10"},
        "log": {"type": "string", "description": "a logpoint message, e.g. 'seed {seed}'"},
        "enabled": BOOLEAN}, ("node_id",), extra=False),
    "Breakpoint": obj({"id": STRING, "job_id": NULLABLE_STRING,
                       "workflow_id": NULLABLE_STRING, "node_id": STRING, "position": STRING,
                       "step": {"type": ["integer", "null"]}, "condition": NULLABLE_STRING,
                       "log": NULLABLE_STRING, "enabled": BOOLEAN},
                      ("id", "node_id", "enabled")),
    "JobStanding": obj({"job_id": STRING, "state": ref("JobState"),
                        "node": NULLABLE_STRING, "step": {"type": ["integer", "null"]},
                        "pending_edits": array(ref("EditRecord")),
                        "outputs": {"type": "object"}}, ("job_id", "state")),
    "Diff": obj({"from": {"type": "object"}, "to": {"type": "object"},
                 "changed": array(obj({"node_id": STRING, "input": STRING, "from": ANY,
                                       "to": ANY})),
                 "added_nodes": array(STRING), "removed_nodes": array(STRING)},
                ("changed", "added_nodes", "removed_nodes")),
    "Pipeline": obj({"state": {"type": "string", "enum": ["running", "paused"]},
                     "paused_jobs": array(STRING), "pending": array(STRING)},
                    ("state",)),
    "ApiWorkflow": {"type": "object", "description": "A workflow in ComfyUI's API format",
                    "additionalProperties": obj({"class_type": STRING,
                                                 "inputs": {"type": "object"}},
                                                ("class_type",))},
    "WorkflowInput": obj({"name": {"type": "string", "minLength": 1, "maxLength": 200},
                          "workflow": ref("ApiWorkflow"),
                          "default_parameters": {"type": "object"}},
                         ("name", "workflow"), extra=False),
    "SavedWorkflow": obj({"id": STRING, "name": STRING, "owner": NULLABLE_STRING,
                          "workflow": {"type": "object"}}, ("id", "name")),
    "Parameter": obj({"node_id": STRING, "field": STRING, "type": STRING, "value": ANY},
                     ("node_id", "field")),
    "Variation": {"oneOf": [
        obj({"type": {"const": "seed"}, "node_id": STRING, "field": STRING,
             "mode": {"type": "string", "enum": ["random", "increment", "fixed"]},
             "start": INTEGER, "batch_seed": INTEGER}, ("type", "node_id", "field")),
        obj({"type": {"const": "cycle"}, "node_id": STRING, "field": STRING,
             "values": {**array(ANY), "minItems": 1}}, ("type", "node_id", "field", "values")),
        obj({"type": {"const": "sweep"}, "node_id": STRING, "field": STRING,
             "start": {"type": "number"}, "stop": {"type": "number"},
             "step": {"type": "number"}},
            ("type", "node_id", "field", "start", "stop", "step"))]},
    "BatchInput": obj({"count": {"type": "integer", "minimum": 1, "maximum": 10000},
                       "variations": array(ref("Variation")),
                       "parameters": {"type": "object"}}, extra=False),
    "Batch": obj({"id": STRING, "status": STRING, "total_count": INTEGER,
                  "completed_count": INTEGER, "failed_count": INTEGER,
                  "jobs": array({"type": "object"})}, ("id", "status", "jobs")),
    "Failure": obj({"id": STRING, "state": STRING, "reason": NULLABLE_STRING,
                    "workflow_id": NULLABLE_STRING}, ("id", "state")),
    "User": obj({"name": STRING, "role": {"type": "string", "enum": ["creator", "admin"]}},
                ("name", "role")),
}
# fmt: on

ERRORS = {
    400: "Malformed request: the error's type says what was wrong",
    401: "A bearer token is required (or the one sent is not valid)",
    403: "The caller may not do this (not an admin, or not the owner)",
    404: "No such job, workflow, batch, breakpoint, edit, preview or user",
    409: "The current state does not allow this; the body carries that state",
    413: "The body is too large",
}


def path_param(name: str, description: str, schema: dict[str, Any] | None = None
               ) -> dict[str, Any]:  # fmt: skip
    return {"name": name, "in": "path", "required": True, "description": description,
            "schema": schema or {"type": "string", "minLength": 1}}  # fmt: skip


def query(name: str, description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "description": description,
            "schema": schema or STRING}  # fmt: skip


JOB_ID = path_param("job_id", "The job's id (a prompt id)")
WORKFLOW_ID = path_param("workflow_id", "A saved workflow's id")
BP_ID = path_param("bp_id", "A breakpoint's id")
BATCH_ID = path_param("batch_id", "A batch's id")


def op(op_id: str, summary: str, tag: str, *, params: tuple[dict[str, Any], ...] = (),
       body: dict[str, Any] | None = None, body_required: bool = True,
       result: dict[str, Any] | None = None, status: int = 200,
       errors: tuple[int, ...] = (400, 404), content: dict[str, Any] | None = None
       ) -> dict[str, Any]:  # fmt: skip
    """One operation; every one may also answer 401 and 403."""
    responses: dict[str, Any] = {
        str(status): {"description": "OK",
                      "content": content or {JSON: {"schema": result or ANY}}}}  # fmt: skip
    for code in sorted({*errors, 401, 403}):
        responses[str(code)] = {"description": ERRORS[code],
                                "content": {JSON: {"schema": ref("Error")}}}  # fmt: skip
    operation: dict[str, Any] = {"operationId": op_id, "summary": summary, "tags": [tag],
                                 "responses": responses}  # fmt: skip
    if params:
        operation["parameters"] = list(params)
    if body is not None:
        operation["requestBody"] = {"required": body_required,
                                    "content": {JSON: {"schema": body}}}  # fmt: skip
    return operation


def _jobs() -> dict[str, Any]:
    job, edits = ref("Job"), ref("Edits")
    return {
        "/api/jobs/{job_id}/pause": {"post": op(
            "pauseJob", "Pause a job at its next control point (a queued job is held)",
            "jobs", params=(JOB_ID,), result=job, errors=(404, 409))},
        "/api/jobs/{job_id}/resume": {"post": op(
            "resumeJob", "Put a paused job back in the queue (front: ahead of the rest)",
            "jobs", params=(JOB_ID,), body=obj({"front": BOOLEAN}, extra=False),
            body_required=False, result=job, errors=(400, 404, 409))},
        "/api/jobs/{job_id}/abort": {"post": op(
            "abortJob", "End a job, keeping its partial results", "jobs", params=(JOB_ID,),
            body=obj({"reason": STRING}, extra=False), body_required=False, result=job,
            errors=(400, 404, 409))},
        "/api/jobs/{job_id}/params": {
            "put": op("editJob", "Change inputs of a queued, paused or running job", "jobs",
                      params=(JOB_ID,), body=ref("EditRequest"), result=edits,
                      errors=(400, 404, 409)),
            "delete": op("undoEdits", "Withdraw every pending edit", "jobs",
                         params=(JOB_ID,), result=edits, errors=(404, 409))},
        "/api/jobs/{job_id}/params/{edit_id}": {"delete": op(
            "undoEdit", "Withdraw one pending edit", "jobs",
            params=(JOB_ID, path_param("edit_id", "The edit's id",
                                       {"type": "integer", "minimum": 1})),
            result=edits, errors=(400, 404, 409))},
        "/api/jobs/{job_id}/preview": {"get": op(
            "jobPreview", "The latest preview image (or one step's); ?format=json: the index",
            "jobs", params=(JOB_ID, query("step", "The step whose preview to send",
                                          {"type": "integer", "minimum": 0}),
                            query("format", "json for the index",
                                  {"type": "string", "enum": ["json", "image"]})),
            content={"image/*": {"schema": {"type": "string", "contentMediaType": "image/*"}},
                     JSON: {"schema": obj({"job_id": STRING,
                                           "previews": array({"type": "object"})})}},
            errors=(400, 404))},
        "/api/jobs/{job_id}/debug": {"get": op(
            "jobDebugState", "The job's debug state (paused step, modified parameters, "
            "previews, abort reason)", "jobs", params=(JOB_ID,),
            result={"type": "object"}, errors=(404,))},
        "/api/jobs/{job_id}/events": {"get": op(
            "jobEvents", "The job's audit log", "jobs", params=(JOB_ID,),
            result=array({"type": "object"}), errors=(404,))},
        "/api/jobs/{job_id}/state": {"get": op(
            "jobStanding", "Where the job stands: state, node, step, pending edits, outputs",
            "jobs", params=(JOB_ID,), result=ref("JobStanding"), errors=(404,))},
        "/api/jobs/{job_id}/parameters": {"get": op(
            "jobParameters", "The job's parameters as it will run (pending edits applied; "
            "edited ones with their original value and pending edit id)", "jobs",
            params=(JOB_ID,), result=array(ref("Parameter")), errors=(404,))},
        "/api/jobs/{job_id}/diff": {"get": op(
            "jobDiff", "How two jobs' inputs differ; without from/to, the job's original "
            "workflow against its current one", "jobs",
            params=(JOB_ID, query("from", "A job id"), query("to", "A job id")),
            result=ref("Diff"), errors=(404,))},
        "/api/jobs/{job_id}/step": {"post": op(
            "stepJob", "Resume a paused job to stop again: over (next node), into (next "
            "point, steps included), out (end of this node)", "debugging",
            params=(JOB_ID,), body=obj({"mode": {"type": "string",
                                                 "enum": ["over", "into", "out"]},
                                        "front": BOOLEAN}, ("mode",), extra=False),
            result=job, errors=(400, 404, 409))},
        "/api/jobs/{job_id}/breakpoints": {
            "post": op("setJobBreakpoint", "Set a breakpoint (or logpoint) on this job",
                       "debugging", params=(JOB_ID,), body=ref("BreakpointInput"),
                       result=ref("Breakpoint"), status=201),
            "get": op("jobBreakpoints", "The job's breakpoints and its workflow's",
                      "debugging", params=(JOB_ID,), result=array(ref("Breakpoint")),
                      errors=(404,))},
    }  # fmt: skip


def _debugging_and_pipeline() -> dict[str, Any]:
    return {
        "/api/workflows/{workflow_id}/breakpoints": {
            "post": op("setWorkflowBreakpoint", "Set a breakpoint on every job of a workflow",
                       "debugging", params=(WORKFLOW_ID,), body=ref("BreakpointInput"),
                       result=ref("Breakpoint"), status=201),
            "get": op("workflowBreakpoints", "The workflow's breakpoints", "debugging",
                      params=(WORKFLOW_ID,), result=array(ref("Breakpoint")),
                      errors=(404,))},
        "/api/breakpoints/{bp_id}": {
            "delete": op("removeBreakpoint", "Remove a breakpoint", "debugging",
                         params=(BP_ID,), result=ref("Breakpoint"), errors=(404,)),
            "patch": op("toggleBreakpoint", "Enable or disable a breakpoint", "debugging",
                        params=(BP_ID,), body=obj({"enabled": BOOLEAN}, ("enabled",),
                                                  extra=False),
                        result=ref("Breakpoint"))},
        "/api/pipeline": {"get": op("pipeline", "The pipeline's state", "pipeline",
                                    result=ref("Pipeline"), errors=())},
        "/api/pipeline/pause": {"post": op(
            "pausePipeline", "Pause every running job and stop starting new ones (admin)",
            "pipeline", result=ref("Pipeline"), errors=(409,))},
        "/api/pipeline/resume": {"post": op(
            "resumePipeline", "Resume the pipeline and the jobs it paused (admin)",
            "pipeline", result=ref("Pipeline"), errors=(409,))},
    }  # fmt: skip


def _workflows() -> dict[str, Any]:
    saved = ref("SavedWorkflow")
    return {
        "/api/workflows": {
            "post": op("saveWorkflow", "Save a workflow (API format) under a name",
                       "workflows", body=ref("WorkflowInput"), result=saved, status=201,
                       errors=(400,)),
            "get": op("listWorkflows", "Saved workflows (a creator's own)", "workflows",
                      result=array(obj({"id": STRING, "name": STRING})), errors=())},
        "/api/workflows/{workflow_id}": {"get": op(
            "getWorkflow", "A saved workflow", "workflows", params=(WORKFLOW_ID,),
            result=saved, errors=(404,))},
        "/api/workflows/{workflow_id}/parameters": {"get": op(
            "workflowParameters", "Its parameters, with their last-used values", "workflows",
            params=(WORKFLOW_ID,), result=array(ref("Parameter")), errors=(404,))},
        "/api/workflows/{workflow_id}/execute": {"post": op(
            "executeWorkflow", "Queue a job of it with {\"node.field\": value} parameters",
            "workflows", params=(WORKFLOW_ID,),
            body=obj({"parameters": {"type": "object"}}, extra=False), body_required=False,
            result=ref("Job"), status=201)},
        "/api/workflows/{workflow_id}/batch": {"post": op(
            "batchWorkflow", "Queue a batch of its jobs with variations", "workflows",
            params=(WORKFLOW_ID,), body=ref("BatchInput"), result=ref("Batch"),
            status=201)},
        "/api/batches/{batch_id}": {"get": op(
            "getBatch", "A batch, its jobs and counts", "workflows", params=(BATCH_ID,),
            result=ref("Batch"), errors=(404,))},
        "/api/batches/{batch_id}/stop": {"post": op(
            "stopBatch", "Abort the batch's jobs not started (include_running: all)",
            "workflows", params=(BATCH_ID,),
            body=obj({"include_running": BOOLEAN}, extra=False), body_required=False,
            result=ref("Batch"))},
        "/api/failures": {"get": op(
            "failures", "Failed and aborted jobs with why, newest first", "jobs",
            params=(query("reason", "A substring of the reason"),
                    query("workflow_id", "Only this workflow's jobs"),
                    query("since", "ISO 8601 time", {"type": "string", "format": "date-time"}),
                    query("until", "ISO 8601 time", {"type": "string", "format": "date-time"}),
                    query("limit", "At most this many",
                          {"type": "integer", "minimum": 1, "maximum": 1000})),
            result=array(ref("Failure")), errors=(400,))},
    }  # fmt: skip


def _users() -> dict[str, Any]:
    return {
        "/api/auth/users": {
            "get": op("listUsers", "Users and roles (admin)", "users",
                      result=array(ref("User")), errors=()),
            "post": op("createUser", "Create (or re-key) a user; the token is shown once "
                       "(admin)", "users",
                       body=obj({"name": {"type": "string", "pattern":
                                          "^[A-Za-z0-9_.-]{1,64}$"},
                                 "role": {"type": "string", "enum": ["creator", "admin"]}},
                                ("name",), extra=False),
                       result=obj({"name": STRING, "role": STRING, "token": STRING},
                                  ("name", "role", "token")), status=201, errors=(400,))},
        "/api/auth/users/{name}": {"delete": op(
            "deleteUser", "Delete a user (admin)", "users",
            params=(path_param("name", "The user's name"),),
            result=obj({"deleted": STRING}), errors=(404,))},
        "/api/openapi.json": {"get": op("openapi", "This document", "meta",
                                        result={"type": "object"}, errors=())},
    }  # fmt: skip


@cache
def document() -> dict[str, Any]:
    """The whole document (built once)."""
    return {
        "openapi": "3.1.0",
        "info": {"title": "midrun", "version": VERSION,
                 "description": "Live control of workflow jobs: pause, resume, edit, undo, "
                 "abort, breakpoints and stepping, the global pipeline pause, saved "
                 "workflows and batches. Errors are {\"error\": {\"type\", \"message\"}}."},
        "paths": {**_jobs(), **_debugging_and_pipeline(), **_workflows(), **_users()},
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        # A token is needed unless the server runs on loopback with auth off.
        "security": [{"bearer": []}, {}],
    }  # fmt: skip


async def openapi_json(request: Request) -> Response:
    """``GET /api/openapi.json``: this document."""
    return JSONResponse(document())
