"""Workflow parameters: the widget values a user may change between (or during) runs.

``extract_parameters`` lists every literal widget input of every node (ComfyUI's dynamic
parameters feature); ``apply_parameters`` returns a new workflow with changed values,
refusing unknown nodes and fields, linked fields and out-of-range values by name.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from midrun.core.errors import ParameterError
from midrun.graph.registry import NodeRegistry
from midrun.graph.types import BOOLEAN, COMBO, FLOAT, INT, STRING, InputSpec, NodeType
from midrun.graph.validation import coerce, in_choices, validate
from midrun.graph.workflow import Workflow, is_link

SEED_NAMES = frozenset({"seed", "noise_seed"})


def parameter_type(spec: InputSpec) -> str:
    """string | number | seed | select | boolean."""
    if spec.type == INT and (spec.control_after_generate or spec.name in SEED_NAMES):
        return "seed"
    if spec.type in (INT, FLOAT):
        return "number"
    if spec.type == COMBO:
        return "select"
    if spec.type == BOOLEAN:
        return "boolean"
    return "string"


def extract_parameters(workflow: Workflow, registry: NodeRegistry) -> list[dict[str, Any]]:
    """Every literal widget input of every node.

    Each is ``{node_id, field, label, type, value, options?, min?, max?}``.
    """
    params: list[dict[str, Any]] = []
    for node_id, spec in workflow.nodes.items():
        node_type = registry.get(spec.class_type)
        if node_type is None:
            continue
        title = spec.title or node_type.display_name or spec.class_type
        for input_spec in node_type.widget_inputs:
            if input_spec.name not in spec.inputs or is_link(spec.inputs[input_spec.name]):
                continue
            param: dict[str, Any] = {
                "node_id": node_id,
                "field": input_spec.name,
                "label": f"{title} / {input_spec.label or input_spec.name}",
                "type": parameter_type(input_spec),
                "value": spec.inputs[input_spec.name],
                "class_type": spec.class_type,
            }
            if input_spec.type == COMBO:
                param["options"] = registry.choices(node_type, input_spec.name)
            if input_spec.min is not None:
                param["min"] = input_spec.min
            if input_spec.max is not None:
                param["max"] = input_spec.max
            if input_spec.step is not None:
                param["step"] = input_spec.step
            if input_spec.hot:
                param["hot"] = True
            if input_spec.type == STRING and input_spec.multiline:
                param["multiline"] = True
            params.append(param)
    return params


ParamEdits = Mapping[str, Any] | Iterable[Mapping[str, Any]]


def _edits(params: ParamEdits) -> list[tuple[str, str, Any]]:
    """Accept ``{"node_id.field": value}`` or ``[{"node_id", "field", "value"}, ...]``."""
    if isinstance(params, Mapping):
        edits = []
        for key, value in params.items():
            node_id, sep, field = str(key).rpartition(".")
            if not sep:
                raise ParameterError(f"Parameter key {key!r} must be 'node_id.field'", key=key)
            edits.append((node_id, field, value))
        return edits
    result = []
    for item in params:
        try:
            result.append((str(item["node_id"]), str(item["field"]), item["value"]))
        except KeyError as exc:
            raise ParameterError(
                f"A parameter needs node_id, field and value; missing {exc.args[0]!r}"
            ) from exc
    return result


def check_value(
    node_id: str, node_type: NodeType, input_spec: InputSpec, value: Any, registry: NodeRegistry
) -> Any:
    """The value coerced to the input's type, or a :class:`ParameterError` saying why not."""
    where = f"{node_type.class_type} {node_id}.{input_spec.name}"
    if input_spec.type == COMBO:
        choices = registry.choices(node_type, input_spec.name) or []
        if not in_choices(value, choices):
            raise _error(
                "value_not_in_list",
                f"{where}: {value!r} is not one of {choices[:20]}",
                node_id,
                input_spec.name,
                value,
            )
        return value
    try:
        coerced = coerce(input_spec.type, value)
    except (TypeError, ValueError, OverflowError) as exc:
        raise _error(
            "invalid_input_type",
            f"{where}: {value!r} is not a {input_spec.type} ({exc})",
            node_id,
            input_spec.name,
            value,
        ) from exc
    if input_spec.type in (INT, FLOAT):
        if input_spec.min is not None and coerced < input_spec.min:
            raise _error(
                "value_smaller_than_min",
                f"{where}: {coerced} is smaller than the minimum {input_spec.min}",
                node_id,
                input_spec.name,
                value,
            )
        if input_spec.max is not None and coerced > input_spec.max:
            raise _error(
                "value_bigger_than_max",
                f"{where}: {coerced} is bigger than the maximum {input_spec.max}",
                node_id,
                input_spec.name,
                value,
            )
    return coerced


def _error(kind: str, message: str, node_id: str, field: str, value: Any) -> ParameterError:
    error = ParameterError(message, node_id=node_id, field=field, received_value=value)
    error.type = kind
    return error


def apply_parameters(
    workflow: Workflow, registry: NodeRegistry, params: ParamEdits, *, check: bool = True
) -> Workflow:
    """A new workflow with the given widget values; the original is untouched."""
    result = workflow.copy()
    for node_id, field, value in _edits(params):
        spec = result.nodes.get(node_id)
        if spec is None:
            raise _error(
                "unknown_node", f"No node {node_id!r} in the workflow", node_id, field, value
            )
        node_type = registry.get(spec.class_type)
        if node_type is None:
            raise _error(
                "unknown_node",
                f"Node {node_id} has unknown type {spec.class_type!r}",
                node_id,
                field,
                value,
            )
        input_spec = node_type.input(field)
        if input_spec is None or not input_spec.is_widget:
            fields = [s.name for s in node_type.widget_inputs]
            raise _error(
                "unknown_field",
                f"{spec.class_type} {node_id} has no parameter {field!r}; it has {fields}",
                node_id,
                field,
                value,
            )
        if is_link(spec.inputs.get(field)):
            raise _error(
                "field_is_linked",
                f"{spec.class_type} {node_id}.{field} is fed by a link, not a value",
                node_id,
                field,
                value,
            )
        spec.inputs[field] = check_value(node_id, node_type, input_spec, value, registry)
    if check:
        checked = validate(result, registry)
        if not checked.ok:
            error = ParameterError(
                "The workflow does not validate after applying the parameters",
                node_errors=checked.node_errors,
                error=checked.error.to_dict() if checked.error else None,
            )
            error.type = "prompt_outputs_failed_validation"
            raise error
    return result
