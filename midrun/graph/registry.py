"""The node registry: which node types exist, and their ComfyUI ``/object_info`` shape."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from midrun.core.errors import NodeDefinitionError
from midrun.graph.types import HIDDEN_RUN_CONTEXT, NodeType

ChoicesProvider = Callable[[], Sequence[Any]]


class NodeRegistry:
    """A set of node types by class name, plus providers for dynamic COMBO lists."""

    def __init__(self, node_types: Iterable[NodeType] = ()) -> None:
        self._types: dict[str, NodeType] = {}
        self._choices: dict[str, ChoicesProvider] = {}
        for node_type in node_types:
            self.register(node_type)

    def register(self, node_type: NodeType, *, replace: bool = False) -> NodeType:
        if node_type.class_type in self._types and not replace:
            raise NodeDefinitionError(f"Node type {node_type.class_type} is already registered")
        self._types[node_type.class_type] = node_type
        return node_type

    def set_choices_source(self, name: str, provider: ChoicesProvider) -> None:
        """Name a dynamic COMBO list, e.g. ``"checkpoints"`` -> files in that folder."""
        self._choices[name] = provider

    def choices(self, node_type: NodeType, input_name: str) -> list[Any] | None:
        """The allowed values of a COMBO input now (None if the input is not a COMBO)."""
        spec = node_type.input(input_name)
        if spec is None or not spec.is_combo:
            return None
        if spec.choices is not None:
            return list(spec.choices)
        provider = self._choices.get(spec.choices_source or "")
        return list(provider()) if provider is not None else []

    def get(self, class_type: str) -> NodeType | None:
        return self._types.get(class_type)

    def __getitem__(self, class_type: str) -> NodeType:
        return self._types[class_type]

    def __contains__(self, class_type: object) -> bool:
        return class_type in self._types

    def __iter__(self) -> Iterator[NodeType]:
        return iter(self._types.values())

    def __len__(self) -> int:
        return len(self._types)

    def merged(self, other: NodeRegistry) -> NodeRegistry:
        """A new registry with this one's types and choice sources, then ``other``'s."""
        result = NodeRegistry()
        for source in (self, other):
            for node_type in source:
                result.register(node_type, replace=True)
            result._choices.update(source._choices)
        return result

    def object_info(self) -> dict[str, dict[str, Any]]:
        """Every node type in ComfyUI's ``GET /object_info`` shape."""
        return {t.class_type: self.object_info_entry(t) for t in self}

    def object_info_entry(self, node_type: NodeType) -> dict[str, Any]:
        """One node type in ComfyUI's ``/object_info/{class}`` entry shape."""
        sections: dict[str, dict[str, Any]] = {"required": {}, "optional": {}, "hidden": {}}
        order: dict[str, list[str]] = {"required": [], "optional": [], "hidden": []}
        for spec in node_type.inputs:
            if spec.type == HIDDEN_RUN_CONTEXT:
                continue  # midrun's own: what the run gives the node, not a ComfyUI input
            order[spec.section].append(spec.name)
            if spec.section == "hidden":
                sections["hidden"][spec.name] = spec.type
                continue
            type_entry: Any = spec.type
            if spec.is_combo:
                type_entry = self.choices(node_type, spec.name)
            opts = spec.options()
            sections[spec.section][spec.name] = [type_entry, opts] if opts else [type_entry]
        entry: dict[str, Any] = {
            "input": {k: v for k, v in sections.items() if v or k == "required"},
            "input_order": {k: v for k, v in order.items() if v or k == "required"},
            "output": [o.type for o in node_type.outputs],
            "output_is_list": [o.is_list for o in node_type.outputs],
            "output_name": [o.display_name for o in node_type.outputs],
            "name": node_type.class_type,
            "display_name": node_type.display_name or node_type.class_type,
            "description": node_type.description,
            "python_module": node_type.module,
            "category": node_type.category,
            "output_node": node_type.output_node,
        }
        hot = [spec.name for spec in node_type.inputs if spec.hot]
        if hot:  # midrun's own, under one key clients ignore: what changes between steps
            entry["midrun"] = {"hot_inputs": hot}
        tooltips = [o.tooltip for o in node_type.outputs]
        if any(tooltips):
            entry["output_tooltips"] = tooltips
        return entry
