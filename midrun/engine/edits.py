"""Edits: the one place that decides whether an edit is valid and how it applies, for
workflows that have not started, suspended runs and runs in flight alike.

An edit sets one literal input of one node. :func:`check_edit` is the static rule (the node
exists, the input is a literal it declares, the edited workflow validates: types, ranges,
choices); :func:`apply_edits` is how a list of edits changes a workflow. What happens to a
run depends on where the edited node stands:

* pending: it simply runs with the new value;
* finished: it and every finished node downstream of it are marked to be recomputed;
  a steppable node in flight among them keeps its step state and receives the new
  upstream values through its hot-swappable inputs (the node's ``resume`` refuses
  anything else, naming the input);
* in flight (a steppable mid-run): its ``resume`` takes the new value from the next step,
  or refuses it.

:func:`changed_inputs` says which inputs of a node in flight an edit reaches, and
:func:`cold_inputs` which of those it cannot take between steps; :func:`edit_suspended`
applies an edit to a suspended run.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from typing import Any

from midrun.core.errors import InputNotHotSwappable, MidrunError, RunStateError
from midrun.engine.runstate import RunState
from midrun.graph.registry import NodeRegistry
from midrun.graph.types import NodeType
from midrun.graph.validation import validate
from midrun.graph.workflow import Workflow, as_link


class EditError(MidrunError):
    type = "invalid_edit"


def apply_edits(workflow: Mapping[str, Any], edits: Iterable[Mapping[str, Any]]
                ) -> dict[str, Any]:  # fmt: skip
    """A copy of the API ``workflow`` with ``edits`` (``{node_id, input_name, new}``, as
    the job's edit rows are) applied in order."""
    prompt = copy.deepcopy(dict(workflow))
    for e in edits:
        inputs = prompt.setdefault(e["node_id"], {}).setdefault("inputs", {})
        inputs[e["input_name"]] = copy.deepcopy(e["new"])
    return prompt


def check_edit(
    prompt: Mapping[str, Any], node_id: str, input_name: str, value: Any,
    registry: NodeRegistry, targets: list[str] | None = None,
) -> dict[str, Any]:  # fmt: skip
    """A copy of ``prompt`` with ``node_id.input_name = value``, if that edit is valid:
    otherwise :class:`EditError` naming the input and why."""
    edited = copy.deepcopy(dict(prompt))
    _set_input(edited, node_id, input_name, value, registry, targets)
    return edited


def _set_input(prompt: dict[str, Any], node_id: str, input_name: str, value: Any,
               registry: NodeRegistry, targets: list[str] | None) -> None:  # fmt: skip
    """:func:`check_edit` in place."""
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
    checked = validate(Workflow.from_api(prompt), registry, targets)
    if not checked.ok:
        errors = checked.node_errors.get(node_id, {}).get("errors") or []
        reason = errors[0]["message"] if errors else (
            checked.error.message if checked.error else "invalid")  # fmt: skip
        raise EditError(
            f"Edit of {node_id}.{input_name} refused: {reason}",
            node_id=node_id,
            input_name=input_name,
            node_errors=checked.node_errors,
        )


def changed_inputs(workflow: Workflow, node: str, edited: str, input_name: str) -> set[str]:
    """The inputs of ``node`` that an edit of ``edited.input_name`` changes: that input
    itself when ``edited`` is ``node``, else those fed by ``edited`` or by a node
    recomputed after it (none when ``node`` is not downstream of ``edited``)."""
    if node == edited:
        return {input_name}
    feeding = workflow.descendants(edited) | {edited}
    return {name for name, link in workflow[node].links() if link.node_id in feeding}


def cold_inputs(node_type: NodeType, changed: Iterable[str]) -> list[str]:
    """Those of ``changed`` that ``node_type`` cannot take between steps, sorted."""
    return sorted(set(changed) - node_type.hot_inputs)


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
    _set_input(prompt, node_id, input_name, value, registry, plan.targets)
    workflow = Workflow.from_api(prompt)
    finished = set(plan.finished)
    affected = workflow.descendants(node_id) | {node_id}
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
        cold = cold_inputs(node_type, changed_inputs(workflow, in_flight, node_id, input_name))
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
