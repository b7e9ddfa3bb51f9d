"""How two versions of a job's workflow differ: a job as submitted against the job as it
will run (its edits), or two jobs (a batch's variations, say) with the parameters each
used."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from midrun.jobs.records import Job
from midrun.jobs.views import current_workflow

if TYPE_CHECKING:
    from midrun.jobs.service import Jobs


def original_workflow(service: Jobs, job: Job, current: Mapping[str, Any]) -> dict[str, Any]:
    """The workflow as submitted: every edited input back to its first old value."""
    prompt = copy.deepcopy(dict(current))
    for key, entry in service.debug_state(job.id)["modified_params_json"].items():
        node_id, _, input_name = key.rpartition(".")
        if node_id in prompt:
            prompt[node_id].setdefault("inputs", {})[input_name] = entry.get("old")
    return prompt


def workflow_diff(a: Mapping[str, Any], b: Mapping[str, Any]) -> dict[str, Any]:
    """The inputs that differ between two API workflows, and the nodes only one has."""
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
    """``left`` as submitted against ``left`` as it will run (``right`` None), or ``left``
    against ``right`` as each will run, with the parameters that differ."""
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
