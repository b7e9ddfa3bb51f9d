"""Read-only views of jobs, as the server answers them and the command line prints them:
where a job stands, the parameters it will run with, its previews, the breakpoints that
apply to it, the failures a user may see."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from midrun.engine.edits import apply_edits
from midrun.graph.parameters import extract_parameters
from midrun.graph.workflow import Workflow
from midrun.jobs import breakpoints as bps
from midrun.jobs.records import Job
from midrun.jobs.states import JobState

if TYPE_CHECKING:
    from midrun.jobs.service import Jobs


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
    """Where the job stands: its state, the node and step it is at, its pending edits,
    what changed, its outputs so far, how long it has run and why it failed."""
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


def current_workflow(service: Jobs, job: Job) -> dict[str, Any]:
    """The job's workflow with its pending edits applied (what it will run with)."""
    return apply_edits(job.workflow, service.store.edits(job.id, status="pending"))


def job_parameters(service: Jobs, job_id: str) -> list[dict[str, Any]]:
    """The job's parameters as it will run: pending edits applied, each edited one with
    its first value (``original``) and, while pending, the edit's id (``edit_id``)."""
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


def previews(service: Jobs, job_id: str) -> list[dict[str, Any]]:
    """The job's kept previews, oldest first: ``{step, file, mime, ...}``."""
    return list(service.debug_state(job_id)["intermediate_previews_json"] or [])


def applying_breakpoints(service: Jobs, job: Job) -> list[dict[str, Any]]:
    """The job's own breakpoints, then those of the saved workflow it runs."""
    own = bps.list_breakpoints(service, job_id=job.id)
    if job.workflow_id is None:
        return own
    return own + bps.list_breakpoints(service, workflow_id=job.workflow_id)


def failures_of(service: Jobs, owner: str | None, **filters: Any) -> list[dict[str, Any]]:
    """:meth:`Jobs.failures`, only the jobs of ``owner`` unless it is None (an admin)."""
    found = service.failures(**filters)
    if owner is None:
        return found
    mine = {j.id for j in service.list(owner=owner,
                                       states=[JobState.FAILED, JobState.ABORTED])}  # fmt: skip
    return [f for f in found if f["id"] in mine]
