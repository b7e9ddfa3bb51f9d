"""Saved workflows: a named API workflow, its extracted parameters, and the parameters it
was last run with (``default_parameters``, which pre-fill the next run's form). Running
one records the parameters each job used."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy import insert, select, update

from midrun.core.errors import MidrunError
from midrun.core.ids import new_id
from midrun.graph.parameters import apply_parameters, extract_parameters
from midrun.graph.variations import Variation
from midrun.graph.workflow import Workflow
from midrun.jobs.batches import submit_batch
from midrun.jobs.records import Job
from midrun.store.schema import now, workflows

if TYPE_CHECKING:
    from midrun.jobs.service import Jobs


class WorkflowNotFound(MidrunError):
    type = "workflow_not_found"


def save_workflow(
    service: Jobs,
    name: str,
    workflow: Mapping[str, Any],
    *,
    owner: str | None = None,
    default_parameters: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Store a validated API workflow under a new id."""
    document = service.check_workflow(workflow)
    workflow_id = new_id()
    with service.db.begin() as conn:
        conn.execute(insert(workflows), {
            "id": workflow_id, "name": name, "owner": owner, "workflow": document,
            "default_parameters": dict(default_parameters or {}), "created_at": now(),
            "updated_at": now()})  # fmt: skip
    return get_workflow(service, workflow_id)


def get_workflow(service: Jobs, workflow_id: str) -> dict[str, Any]:
    with service.db.read() as conn:
        row = conn.execute(select(workflows).where(workflows.c.id == workflow_id)).first()
    if row is None:
        raise WorkflowNotFound(f"No workflow {workflow_id!r}", workflow_id=workflow_id)
    data = dict(row._mapping)
    data["created_at"] = data["created_at"].isoformat()
    data["updated_at"] = data["updated_at"].isoformat()
    return data


def list_workflows(service: Jobs, owner: str | None = None) -> list[dict[str, Any]]:
    query = select(workflows.c.id, workflows.c.name, workflows.c.owner).order_by(
        workflows.c.created_at
    )
    if owner is not None:
        query = query.where(workflows.c.owner == owner)
    with service.db.read() as conn:
        return [dict(r._mapping) for r in conn.execute(query)]


def workflow_parameters(service: Jobs, workflow_id: str) -> list[dict[str, Any]]:
    """The workflow's parameters, each with its last-used value where there is one."""
    saved = get_workflow(service, workflow_id)
    params = extract_parameters(Workflow.from_api(saved["workflow"]), service.registry)
    defaults = saved["default_parameters"] or {}
    for param in params:
        key = f"{param['node_id']}.{param['field']}"
        if key in defaults:
            param["default"], param["value"] = param["value"], defaults[key]
    return params


def execute_workflow(
    service: Jobs,
    workflow_id: str,
    parameters: Mapping[str, Any] | None = None,
    **fields: Any,
) -> Job:
    """Queue a job of a saved workflow with ``{"node.field": value}`` parameters (over the
    last-used ones); they become the workflow's new defaults."""
    saved = get_workflow(service, workflow_id)
    used = {**(saved["default_parameters"] or {}), **dict(parameters or {})}
    edited = apply_parameters(Workflow.from_api(saved["workflow"]), service.registry, used)
    job = service.submit(edited.to_api(), workflow_id=workflow_id, parameters=used, **fields)
    with service.db.begin() as conn:
        conn.execute(update(workflows).where(workflows.c.id == workflow_id)
                     .values(default_parameters=used, updated_at=now()))  # fmt: skip
    return job


def submit_workflow_batch(
    service: Jobs,
    saved: Mapping[str, Any],
    parameters: Mapping[str, Any] | None = None,
    *,
    count: int | None = None,
    variations: Sequence[Mapping[str, Any] | Variation] = (),
    owner: str | None = None,
) -> dict[str, Any]:
    """A batch of the saved workflow ``saved`` (as :func:`get_workflow` returns it) with
    ``parameters`` over its last-used ones; returns the batch."""
    document = saved["workflow"]
    used = {**(saved["default_parameters"] or {}), **dict(parameters or {})}
    if used:
        document = apply_parameters(Workflow.from_api(document), service.registry,
                                    used).to_api()  # fmt: skip
    return submit_batch(service, document, count=count, variations=variations, owner=owner,
                        workflow_id=saved["id"])  # fmt: skip
