"""The ComfyUI API format: ``{node_id: {class_type, inputs: {name: literal | [src, out]}, _meta}}``.

A :class:`Workflow` is that document as plain data with the links made explicit. Node ids
are strings (ComfyUI clients send ``"3"``; subgraph nodes are ``"12:5"``).
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from midrun.core.errors import WorkflowFormatError


@dataclass(frozen=True, slots=True)
class Link:
    """An input fed by output ``output`` of node ``node_id``."""

    node_id: str
    output: int

    def to_api(self) -> list[Any]:
        return [self.node_id, self.output]


def is_link(value: Any) -> bool:
    """ComfyUI's rule: any list in ``inputs`` is a link ``[src_id, out_index]``."""
    return isinstance(value, (list, tuple))


def as_link(value: Any) -> Link | None:
    """The link a value spells, or None if it is not a well-formed ``[src_id, index]``."""
    if not is_link(value) or len(value) != 2:
        return None
    src, out = value
    if isinstance(src, bool) or not isinstance(src, (str, int)):
        return None
    if isinstance(out, bool) or not isinstance(out, int) or out < 0:
        return None
    return Link(str(src), out)


@dataclass(slots=True)
class NodeSpec:
    """One node of an API-format workflow."""

    id: str
    class_type: str
    inputs: dict[str, Any] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def title(self) -> str | None:
        return self.meta.get("title")

    def links(self) -> Iterator[tuple[str, Link]]:
        """``(input_name, link)`` for every well-formed link input."""
        for name, value in self.inputs.items():
            link = as_link(value)
            if link is not None:
                yield name, link

    def to_api(self) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "class_type": self.class_type,
            "inputs": copy_json(self.inputs),
        }
        if self.meta:
            entry["_meta"] = dict(self.meta)
        return entry


def copy_json(value: Any) -> Any:
    """A copy of JSON-like data (dicts, lists, tuples of scalars): a workflow's inputs.
    Several times faster than ``copy.deepcopy``, which every submission pays; anything
    else is copied with deepcopy."""
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, dict):
        return {k: copy_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [copy_json(v) for v in value]
    if isinstance(value, tuple):
        return tuple(copy_json(v) for v in value)
    return copy.deepcopy(value)


@dataclass(slots=True)
class Workflow:
    """An API-format workflow: node specs by id, in document order."""

    nodes: dict[str, NodeSpec] = field(default_factory=dict)

    @classmethod
    def from_api(cls, document: Mapping[str, Any]) -> Workflow:
        """Read an API-format document. Raises :class:`WorkflowFormatError` on bad shape."""
        if not isinstance(document, Mapping):
            raise WorkflowFormatError(
                f"An API-format workflow is a JSON object of nodes, got {type(document).__name__}"
            )
        nodes: dict[str, NodeSpec] = {}
        for raw_id, entry in document.items():
            node_id = str(raw_id)
            if not isinstance(entry, Mapping):
                raise WorkflowFormatError(
                    f"Node {node_id} must be an object with class_type and inputs",
                    details=f"got {type(entry).__name__}",
                    node_id=node_id,
                )
            class_type = entry.get("class_type")
            inputs = entry.get("inputs", {})
            if not isinstance(inputs, Mapping):
                raise WorkflowFormatError(
                    f"Node {node_id}: inputs must be an object", node_id=node_id
                )
            meta = entry.get("_meta") or {}
            nodes[node_id] = NodeSpec(
                id=node_id,
                class_type=class_type if isinstance(class_type, str) else "",
                inputs={k: copy_json(v) for k, v in inputs.items()},
                meta=dict(meta) if isinstance(meta, Mapping) else {},
            )
        return cls(nodes)

    def to_api(self) -> dict[str, Any]:
        return {node_id: spec.to_api() for node_id, spec in self.nodes.items()}

    def copy(self) -> Workflow:
        return Workflow.from_api(self.to_api())

    def __getitem__(self, node_id: str) -> NodeSpec:
        return self.nodes[node_id]

    def __contains__(self, node_id: object) -> bool:
        return node_id in self.nodes

    def __len__(self) -> int:
        return len(self.nodes)

    def ancestors(self, node_ids: list[str]) -> list[str]:
        """``node_ids`` and everything they depend on, each once, in discovery order."""
        seen: dict[str, None] = {}
        stack = list(reversed(node_ids))
        while stack:
            node_id = stack.pop()
            if node_id in seen or node_id not in self.nodes:
                continue
            seen[node_id] = None
            for _, link in self.nodes[node_id].links():
                stack.append(link.node_id)
        return list(seen)

    def consumers(self) -> dict[str, set[str]]:
        """For every node, the nodes that read one of its outputs."""
        result: dict[str, set[str]] = {node_id: set() for node_id in self.nodes}
        for node_id, spec in self.nodes.items():
            for _, link in spec.links():
                if link.node_id in result:
                    result[link.node_id].add(node_id)
        return result

    def descendants(self, node_id: str) -> set[str]:
        """Every node that reads, directly or through others, an output of ``node_id``."""
        consumers = self.consumers()
        seen: set[str] = set()
        stack = [node_id]
        while stack:
            for nxt in consumers.get(stack.pop(), ()):
                if nxt not in seen:
                    seen.add(nxt)
                    stack.append(nxt)
        return seen


def is_api_format(document: Any) -> bool:
    """True for ``{id: {class_type, ...}}`` (possibly wrapped as ``{"prompt": {...}}``)."""
    if not isinstance(document, Mapping) or not document:
        return False
    return all(isinstance(v, Mapping) and "class_type" in v for v in document.values())


def is_ui_format(document: Any) -> bool:
    """True for a saved canvas workflow (``nodes`` list, ``links``, optional ``definitions``)."""
    return isinstance(document, Mapping) and isinstance(document.get("nodes"), list)
