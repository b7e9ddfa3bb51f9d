"""Validation of API-format workflows with ComfyUI's error shapes.

Only output nodes (or ``partial_execution_targets``) and their ancestors are checked and
run. Each problem is an :class:`ErrorInfo` filed under its node in ``node_errors``
(``{node_id: {errors, dependent_outputs, class_type}}``); the top-level ``error`` says why
the workflow as a whole cannot run.

Two limits keep one prompt from exhausting the server (a megabyte of prompt text is
thousands of text-encoder passes and gigabytes of memory): ``MAX_NODES`` nodes per
workflow (``prompt_too_large``) and ``MAX_TEXT_CHARS`` characters per text input
(``value_too_long``, under its node). Edits are validated here too, so they hold for
mid-run edits as well.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from midrun.core.errors import ErrorInfo
from midrun.graph.registry import NodeRegistry
from midrun.graph.types import ANY, BOOLEAN, COMBO, FLOAT, INT, STRING, InputSpec, NodeType
from midrun.graph.workflow import Workflow, as_link, is_link

MAX_NODES = 5_000  # ComfyUI's largest shipped templates have a few hundred
MAX_TEXT_CHARS = 20_000  # ~5,000 CLIP tokens: 65 text-encoder windows


@dataclass(slots=True)
class ValidationResult:
    """Outcome of :func:`validate`. ``workflow`` has literal values coerced to their types."""

    workflow: Workflow
    outputs: list[str] = field(default_factory=list)
    error: ErrorInfo | None = None
    node_errors: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """True when the whole requested workflow can run with no error anywhere."""
        return self.error is None and not self.node_errors

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "error": self.error.to_dict() if self.error else None,
            "node_errors": self.node_errors,
            "outputs": list(self.outputs),
        }


def types_compatible(received: str, expected: str) -> bool:
    """ComfyUI's link type rule: ``*`` matches anything, comma lists match on overlap."""
    if received == ANY or expected == ANY:
        return True
    if expected == COMBO and received == COMBO:
        return True
    got = {t.strip() for t in received.split(",")}
    want = {t.strip() for t in expected.split(",")}
    return bool(got & want)


class _Validator:
    def __init__(self, workflow: Workflow, registry: NodeRegistry) -> None:
        self.workflow = workflow
        self.registry = registry
        self.errors: dict[str, list[ErrorInfo]] = {}
        self.valid: dict[str, bool] = {}

    def add(self, node_id: str, error: ErrorInfo) -> None:
        self.errors.setdefault(node_id, []).append(error)

    def node(self, node_id: str) -> bool:
        """Validate one node and (first) its ancestors; memoised; cycles are found earlier."""
        if node_id in self.valid:
            return self.valid[node_id]
        self.valid[node_id] = True  # provisional: cycles were ruled out before
        spec = self.workflow.nodes[node_id]
        node_type = self.registry[spec.class_type]
        ok = True
        for input_spec in node_type.inputs:
            if input_spec.section == "hidden":
                continue
            if input_spec.name not in spec.inputs:
                if input_spec.section == "required":
                    self.add(node_id, _missing(input_spec))
                    ok = False
                continue
            value = spec.inputs[input_spec.name]
            if is_link(value):
                ok = self._linked(node_id, input_spec, value) and ok
            else:
                ok = self._literal(node_id, node_type, input_spec, value) and ok
        self.valid[node_id] = ok
        return ok

    def _linked(self, node_id: str, input_spec: InputSpec, value: Any) -> bool:
        link = as_link(value)
        name = input_spec.name
        if link is None:
            self.add(
                node_id,
                ErrorInfo(
                    "bad_linked_input",
                    "Bad linked input, must be a length-2 list of [node_id, slot_index]",
                    f"{name}",
                    {
                        "input_name": name,
                        "input_config": _config(input_spec),
                        "received_value": value,
                    },
                ),
            )
            return False
        source = self.workflow.nodes.get(link.node_id)
        if source is None:
            self.add(
                node_id,
                ErrorInfo(
                    "bad_linked_input",
                    f"Input {name!r} links to node {link.node_id}, which is not in the workflow",
                    f"{name}",
                    {"input_name": name, "linked_node": link.to_api()},
                ),
            )
            return False
        source_type = self.registry[source.class_type]
        if link.output >= len(source_type.outputs):
            self.add(
                node_id,
                ErrorInfo(
                    "bad_linked_input",
                    f"Input {name!r} links to output {link.output} of node {link.node_id} "
                    f"({source.class_type}), which has {len(source_type.outputs)} outputs",
                    f"{name}",
                    {"input_name": name, "linked_node": link.to_api()},
                ),
            )
            return False
        received = source_type.outputs[link.output].type
        if not types_compatible(received, input_spec.type):
            self.add(
                node_id,
                ErrorInfo(
                    "return_type_mismatch",
                    "Return type mismatch between linked nodes",
                    f"{name}, received_type({received}) mismatch input_type({input_spec.type})",
                    {
                        "input_name": name,
                        "input_config": _config(input_spec),
                        "received_type": received,
                        "linked_node": link.to_api(),
                    },
                ),
            )
            return False
        return self.node(link.node_id)

    def _literal(
        self, node_id: str, node_type: NodeType, input_spec: InputSpec, value: Any
    ) -> bool:
        name = input_spec.name
        extra = {"input_name": name, "input_config": _config(input_spec), "received_value": value}
        if input_spec.is_combo:
            choices = self.registry.choices(node_type, name) or []
            if not in_choices(value, choices):
                shown = choices if len(choices) <= 20 else [*choices[:20], "..."]
                self.add(
                    node_id,
                    ErrorInfo(
                        "value_not_in_list",
                        "Value not in list",
                        f"{name}: '{value}' not in {shown}",
                        {**extra, "input_config": [choices, input_spec.options()]},
                    ),
                )
                return False
            return True
        try:
            coerced = coerce(input_spec.type, value)
        except (TypeError, ValueError, OverflowError) as exc:
            self.add(
                node_id,
                ErrorInfo(
                    "invalid_input_type",
                    f"Failed to convert an input value to a {input_spec.type} value",
                    f"{name}, {value!r}, {exc}",
                    extra,
                ),
            )
            return False
        self.workflow.nodes[node_id].inputs[name] = coerced
        if input_spec.type == STRING and len(coerced) > MAX_TEXT_CHARS:
            self.add(
                node_id,
                ErrorInfo(
                    "value_too_long",
                    f"Text of {len(coerced)} characters longer than the limit of "
                    f"{MAX_TEXT_CHARS}",
                    f"{name}: shorten it to at most {MAX_TEXT_CHARS} characters",
                    {**extra, "received_value": coerced[:200] + "...", "limit": MAX_TEXT_CHARS},
                ),
            )
            return False
        if input_spec.type in (INT, FLOAT):
            if input_spec.min is not None and coerced < input_spec.min:
                self.add(
                    node_id,
                    ErrorInfo(
                        "value_smaller_than_min",
                        f"Value {coerced} smaller than min of {input_spec.min}",
                        f"{name}",
                        extra,
                    ),
                )
                return False
            if input_spec.max is not None and coerced > input_spec.max:
                self.add(
                    node_id,
                    ErrorInfo(
                        "value_bigger_than_max",
                        f"Value {coerced} bigger than max of {input_spec.max}",
                        f"{name}",
                        extra,
                    ),
                )
                return False
        return True


def in_choices(value: Any, choices: Sequence[Any]) -> bool:
    """``value in choices`` without Python's ``True == 1``."""
    return any(c == value and isinstance(c, bool) == isinstance(value, bool) for c in choices)


def coerce(type_name: str, value: Any) -> Any:
    """Convert a literal to its declared widget type, refusing lossy or absurd conversions."""
    if type_name == INT:
        if isinstance(value, bool):
            return int(value)
        if isinstance(value, float):
            if not value.is_integer():
                raise ValueError(f"{value} is not a whole number")
            return int(value)
        if isinstance(value, (int, str)):
            return int(value)
        raise TypeError(f"expected a number, got {type(value).__name__}")
    if type_name == FLOAT:
        if isinstance(value, (int, float, str)) and not isinstance(value, bool):
            result = float(value)
            if not math.isfinite(result):
                raise ValueError(f"{result} is not a usable value")
            return result
        raise TypeError(f"expected a number, got {type(value).__name__}")
    if type_name == STRING:
        if value is None or isinstance(value, (dict, list)):
            raise TypeError(f"expected text, got {type(value).__name__}")
        return str(value)
    if type_name == BOOLEAN:
        if isinstance(value, bool):
            return value
        if isinstance(value, (int, float)) and value in (0, 1):
            return bool(value)
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        raise ValueError(f"{value!r} is not a boolean")
    return value


def _missing(input_spec: InputSpec) -> ErrorInfo:
    return ErrorInfo(
        "required_input_missing",
        "Required input is missing",
        f"{input_spec.name}",
        {"input_name": input_spec.name},
    )


def _config(input_spec: InputSpec) -> list[Any]:
    return [input_spec.type, input_spec.options()]


def find_cycle(workflow: Workflow, node_ids: Sequence[str]) -> list[str] | None:
    """A dependency cycle among ``node_ids``' ancestry, as ``[a, b, ..., a]``, or None."""
    white, grey, black = 0, 1, 2
    colour: dict[str, int] = {}
    for root in node_ids:
        if colour.get(root, white) != white:
            continue
        path: list[str] = []
        stack: list[tuple[str, list[str]]] = [(root, _deps(workflow, root))]
        colour[root] = grey
        path.append(root)
        while stack:
            node_id, deps = stack[-1]
            if not deps:
                stack.pop()
                path.pop()
                colour[node_id] = black
                continue
            dep = deps.pop()
            state = colour.get(dep, white)
            if state == grey:
                return [*path[path.index(dep) :], dep]
            if state == white:
                colour[dep] = grey
                path.append(dep)
                stack.append((dep, _deps(workflow, dep)))
    return None


def _deps(workflow: Workflow, node_id: str) -> list[str]:
    return [link.node_id for _, link in workflow.nodes[node_id].links() if link.node_id in workflow]


def _dependencies_first(workflow: Workflow, roots: Sequence[str]) -> list[str]:
    """``roots`` and their ancestry, each after everything it needs (no recursion, so a
    chain of any length is fine; cycles were ruled out before)."""
    order: list[str] = []
    seen: set[str] = set()
    stack: list[tuple[str, bool]] = [(r, False) for r in reversed(roots)]
    while stack:
        node_id, expanded = stack.pop()
        if expanded:
            order.append(node_id)
            continue
        if node_id in seen:
            continue
        seen.add(node_id)
        stack.append((node_id, True))
        stack.extend((d, False) for d in _deps(workflow, node_id) if d not in seen)
    return order


def _drop_undeclared_links(workflow: Workflow, registry: NodeRegistry) -> None:
    """Links into inputs a node type does not declare are ignored, as ComfyUI does; they
    must not become dependencies either."""
    for spec in workflow.nodes.values():
        node_type = registry[spec.class_type]
        for name in [n for n, v in spec.inputs.items() if is_link(v)]:
            declared = node_type.input(name)
            if declared is None or declared.section == "hidden":
                del spec.inputs[name]


def validate(
    workflow: Workflow,
    registry: NodeRegistry,
    partial_execution_targets: Sequence[str] | None = None,
    *,
    copy: bool = True,
) -> ValidationResult:
    """Check a workflow against the registry, like ComfyUI's ``validate_prompt``.

    Returns the coerced workflow, the output nodes that will run and every error found.
    With ``copy=False`` the caller's workflow is coerced in place (one it just parsed
    for this call and will not otherwise use).
    """
    if copy:
        workflow = workflow.copy()
    result = ValidationResult(workflow)
    if len(workflow.nodes) > MAX_NODES:
        result.error = ErrorInfo(
            "prompt_too_large",
            f"The prompt has {len(workflow.nodes)} nodes; at most {MAX_NODES} are run",
            "Split it into smaller prompts",
            {"nodes": len(workflow.nodes), "limit": MAX_NODES},
        )
        return result

    # As ComfyUI: the first node (in the prompt's order) without a class, or of a class
    # nobody declares, is the error, with no node_errors (a client shows it as a missing
    # custom node).
    for node_id, spec in workflow.nodes.items():
        if spec.class_type and spec.class_type in registry:
            continue
        title = spec.title or (spec.class_type or None)
        message = (f"Node '{title}' not found. The custom node may not be installed."
                   if spec.class_type else
                   f"Node '{spec.title or f'ID #{node_id}'}' has no class_type. The workflow "
                   "may be corrupted or a custom node is missing.")  # fmt: skip
        result.error = ErrorInfo(
            "missing_node_type", message, f"Node ID '#{node_id}'",
            {"node_id": node_id, "class_type": spec.class_type or None,
             "node_title": title if spec.class_type else spec.title},
        )  # fmt: skip
        return result

    _drop_undeclared_links(workflow, registry)
    if partial_execution_targets is not None:
        targets = [str(t) for t in partial_execution_targets]
        absent = [t for t in targets if t not in workflow]
        if absent:
            result.error = ErrorInfo(
                "invalid_prompt",
                f"partial_execution_targets names nodes not in the workflow: {', '.join(absent)}",
                "",
                {"nodes": absent},
            )
            return result
        outputs = [t for t in targets if registry[workflow[t].class_type].output_node]
    else:
        outputs = [n for n, s in workflow.nodes.items() if registry[s.class_type].output_node]
    if not outputs:
        result.error = ErrorInfo("prompt_no_outputs", "Prompt has no outputs", "", {})
        return result

    cycle = find_cycle(workflow, outputs)
    if cycle is not None:
        shown = " -> ".join(cycle)
        result.error = ErrorInfo(
            "dependency_cycle",
            f"Dependency cycle detected between nodes {shown}",
            shown,
            {"nodes": cycle[:-1]},
        )
        for node_id in cycle[:-1]:
            result.node_errors[node_id] = {
                "errors": [
                    ErrorInfo(
                        "dependency_cycle",
                        "Node is part of a dependency cycle",
                        shown,
                        {"cycle": cycle},
                    ).to_dict()
                ],
                "dependent_outputs": [],
                "class_type": workflow[node_id].class_type,
            }
        return result

    validator = _Validator(workflow, registry)
    for node_id in _dependencies_first(workflow, outputs):
        validator.node(node_id)  # ancestors before descendants: node() never recurses deep
    good: list[str] = []
    for output_id in outputs:
        if validator.node(output_id):
            good.append(output_id)
    if validator.errors:
        for node_id, errors in validator.errors.items():
            dependents = [o for o in outputs if node_id in workflow.ancestors([o])]
            result.node_errors[node_id] = {
                "errors": [e.to_dict() for e in errors],
                "dependent_outputs": dependents,
                "class_type": workflow[node_id].class_type,
            }
        result.error = ErrorInfo(
            "prompt_outputs_failed_validation",
            "Prompt outputs failed validation",
            "; ".join(
                f"{workflow[n].class_type} {n}: {e[0].message}" for n, e in validator.errors.items()
            ),
            {},
        )
    result.outputs = good
    return result
