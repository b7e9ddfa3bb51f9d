"""Editing a suspended workflow run before it resumes.

An edit sets one literal input of one node in the saved run. What happens on resume
depends on where that node stands:

* pending: it simply runs with the new value;
* finished: it and every finished node downstream of it are marked to be recomputed;
  a steppable node in flight among them keeps its step state and receives the new
  upstream values through its hot-swappable inputs (the node's ``resume`` refuses
  anything else, naming the input);
* in flight (a steppable mid-run): its ``resume`` takes the new value from the next step,
  or refuses it.

The edited workflow is validated against the registry first (types, ranges, choices).
"""

from __future__ import annotations

import copy
from typing import Any

from midrun.core.errors import InputNotHotSwappable, MidrunError, RunStateError
from midrun.engine.runstate import RunState
from midrun.graph.registry import NodeRegistry
from midrun.graph.validation import validate
from midrun.graph.workflow import Workflow, as_link


class EditError(MidrunError):
    type = "invalid_edit"


def edit_suspended(
    state: RunState, node_id: str, input_name: str, value: Any, registry: NodeRegistry
) -> RunState:
    """A copy of ``state`` with ``node_id``'s input ``input_name`` set to ``value``."""
    if state.kind != "workflow":
        raise RunStateError(f"Run {state.run_id} is a {state.kind} run; only workflow runs "
                            "are edited this way")  # fmt: skip
    plan = copy.deepcopy(state.workflow_checkpoint())
    prompt: dict[str, Any] = plan.workflow
    if node_id not in prompt:
        raise EditError(f"Node {node_id!r} is not in this run's workflow", node_id=node_id)
    inputs = prompt[node_id].setdefault("inputs", {})
    if as_link(inputs.get(input_name)) is not None:
        raise EditError(
            f"Input {input_name!r} of node {node_id} is connected to another node; edit "
            "that node instead",
            node_id=node_id,
            input_name=input_name,
        )
    node_type = registry.get(prompt[node_id]["class_type"])
    if node_type is None or node_type.input(input_name) is None:
        raise EditError(
            f"Node {node_id} has no input {input_name!r}", node_id=node_id, input_name=input_name
        )
    inputs[input_name] = value
    checked = validate(Workflow.from_api(prompt), registry, plan.targets)
    if not checked.ok:
        errors = checked.node_errors.get(node_id, {}).get("errors") or []
        reason = (
            errors[0]["message"] if errors else (checked.error.message if checked.error else "")
        )
        raise EditError(
            f"Edit of {node_id}.{input_name} refused: {reason}",
            node_id=node_id,
            input_name=input_name,
            node_errors=checked.node_errors,
        )
    finished = set(plan.finished)
    affected = Workflow.from_api(prompt).descendants(node_id) | {node_id}
    if node_id not in finished:
        affected = {node_id}
    for in_flight in sorted(affected & set(plan.in_flight)):
        class_type = prompt[in_flight]["class_type"]
        node_type = registry[class_type]
        if not hasattr(node_type.impl, "resume"):
            raise EditError(
                f"Node {in_flight} ({class_type}) is mid-run and cannot take new inputs; "
                "abort and run again",
                node_id=node_id,
                input_name=input_name,
            )
        # The inputs of the mid-run node that this edit changes: the edited one itself, or
        # those fed by recomputed upstream nodes. Each must be hot-swappable.
        changed = (
            {input_name}
            if in_flight == node_id
            else {
                name
                for name, link in Workflow.from_api(prompt)[in_flight].links()
                if link.node_id in affected
            }
        )
        cold = sorted(changed - node_type.hot_inputs)
        if cold:
            raise InputNotHotSwappable(
                cold[0],
                f"node {in_flight} ({class_type}) is mid-run and takes only "
                f"{', '.join(sorted(node_type.hot_inputs)) or 'no inputs'} between steps "
                f"(edit of {node_id}.{input_name}); abort and run again with the new value",
                node_id=in_flight,
                edited=f"{node_id}.{input_name}",
            )
    for stale in affected & finished:
        plan.values[stale] = None  # recompute on resume
        if isinstance(plan.ui, dict):
            plan.ui.pop(stale, None)
    return RunState(state.kind, state.run_id, plan, dict(state.blobs), state.reason)
