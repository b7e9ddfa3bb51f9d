"""Converting saved canvas workflows (ComfyUI's UI format) to the API format.

Handles schema 0.4 (links as ``[id, origin, origin_slot, target, target_slot, type]``) and
schema 1 (links as objects), positional ``widgets_values`` mapped to input names through
the node declarations (skipping the ``control_after_generate`` value after seed widgets
and the upload button value of image inputs), the virtual nodes (Reroute, PrimitiveNode,
Note, MarkdownNote) removed with links resolved through them, muted nodes (mode 2)
dropped, bypassed nodes (mode 4) passing a matching input through, and subgraphs
(``definitions.subgraphs``) flattened with execution ids like ``"12:5"``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from midrun.core.errors import UnknownNodeTypesError, WorkflowFormatError
from midrun.graph.registry import NodeRegistry
from midrun.graph.types import WIDGET_TYPES, InputSpec, NodeType
from midrun.graph.workflow import Workflow

MODE_ALWAYS, MODE_NEVER, MODE_BYPASS = 0, 2, 4
SUBGRAPH_INPUT_NODE, SUBGRAPH_OUTPUT_NODE = -10, -20
NOTE_TYPES = frozenset({"Note", "MarkdownNote"})
REROUTE = "Reroute"
PRIMITIVE = "PrimitiveNode"
VIRTUAL_TYPES = NOTE_TYPES | {REROUTE, PRIMITIVE}
CONTROL_VALUES = frozenset({"fixed", "increment", "decrement", "randomize"})
SEED_NAMES = frozenset({"seed", "noise_seed"})
MAX_DEPTH = 32
# Each hop costs a few stack frames; stay well inside Python's recursion limit.
MAX_HOPS = 200


@dataclass(frozen=True, slots=True)
class UILink:
    id: int
    origin_id: int
    origin_slot: int
    target_id: int
    target_slot: int
    type: str


@dataclass(frozen=True, slots=True)
class Literal:
    """A value that reaches an input directly (from a PrimitiveNode or a subgraph widget)."""

    value: Any


@dataclass(frozen=True, slots=True)
class Source:
    """An executable node's output: flattened node id and output slot."""

    node_id: str
    slot: int


Resolved = Source | Literal | None


@dataclass(slots=True)
class GraphDef:
    """One graph level: the root workflow or a subgraph definition."""

    nodes: dict[int, dict[str, Any]]
    links: dict[int, UILink]
    inputs: list[dict[str, Any]] = field(default_factory=list)
    outputs: list[dict[str, Any]] = field(default_factory=list)
    name: str = ""


@dataclass(slots=True)
class Scope:
    """A graph level as instantiated: its id prefix and the instance node that holds it."""

    graph: GraphDef
    prefix: str = ""
    parent: Scope | None = None
    instance: dict[str, Any] | None = None
    depth: int = 0

    def flat_id(self, node_id: int) -> str:
        return f"{self.prefix}{node_id}"


def _links(raw: Any) -> dict[int, UILink]:
    links: dict[int, UILink] = {}
    for entry in raw or []:
        if isinstance(entry, Mapping):
            link = UILink(
                int(entry["id"]),
                int(entry["origin_id"]),
                int(entry["origin_slot"]),
                int(entry["target_id"]),
                int(entry["target_slot"]),
                str(entry.get("type", "*")),
            )
        elif isinstance(entry, (list, tuple)) and len(entry) >= 5:
            link = UILink(
                int(entry[0]),
                int(entry[1]),
                int(entry[2]),
                int(entry[3]),
                int(entry[4]),
                str(entry[5]) if len(entry) > 5 else "*",
            )
        else:
            raise WorkflowFormatError(f"Unreadable link entry: {entry!r}")
        links[link.id] = link
    return links


def _graph(raw: Mapping[str, Any], name: str = "") -> GraphDef:
    nodes_raw = raw.get("nodes")
    if not isinstance(nodes_raw, list):
        raise WorkflowFormatError(f"Graph {name or 'root'} has no nodes list")
    nodes: dict[int, dict[str, Any]] = {}
    for node in nodes_raw:
        if not isinstance(node, Mapping) or "id" not in node or "type" not in node:
            raise WorkflowFormatError(
                f"Graph {name or 'root'}: a node lacks id or type: {node!r:.200}"
            )
        nodes[int(node["id"])] = dict(node)
    return GraphDef(
        nodes=nodes,
        links=_links(raw.get("links")),
        inputs=list(raw.get("inputs") or []),
        outputs=list(raw.get("outputs") or []),
        name=name,
    )


def _input_name(entry: Mapping[str, Any]) -> str:
    widget = entry.get("widget")
    if isinstance(widget, Mapping) and widget.get("name"):
        return str(widget["name"])
    return str(entry.get("name", ""))


def _type_set(type_name: Any) -> set[str]:
    return {t.strip() for t in str(type_name or "*").split(",")}


def _types_match(a: Any, b: Any) -> bool:
    sa, sb = _type_set(a), _type_set(b)
    return "*" in sa or "*" in sb or bool(sa & sb)


def has_control_value(spec: InputSpec) -> bool:
    """Whether the canvas keeps a ``control_after_generate`` value after this widget's."""
    return spec.control_after_generate or (spec.type == "INT" and spec.name in SEED_NAMES)


def map_widget_values(node_type: NodeType, values: Any) -> dict[str, Any]:
    """Name the positional ``widgets_values`` of a node through its declaration."""
    if isinstance(values, Mapping):
        return {s.name: values[s.name] for s in node_type.widget_inputs if s.name in values}
    if not isinstance(values, list):
        return {}
    named: dict[str, Any] = {}
    index = 0
    for spec in node_type.widget_inputs:
        if index >= len(values):
            break
        value = values[index]
        if isinstance(value, Mapping) and set(value) == {"__value__"}:
            value = value["__value__"]  # the frontend wraps list-valued widgets like this
        named[spec.name] = value
        index += 1
        if has_control_value(spec) and index < len(values) and values[index] in CONTROL_VALUES:
            index += 1
        if spec.image_upload and index < len(values) and isinstance(values[index], str):
            index += 1
    return named


class _Converter:
    def __init__(self, document: Mapping[str, Any], registry: NodeRegistry) -> None:
        self.registry = registry
        self.root = _graph(document)
        self.subgraphs: dict[str, GraphDef] = {}
        definitions = document.get("definitions") or {}
        for raw in definitions.get("subgraphs") or []:
            sub_id = str(raw.get("id", ""))
            self.subgraphs[sub_id] = _graph(raw, raw.get("name") or sub_id)
        self.api: dict[str, dict[str, Any]] = {}
        self.unknown: dict[str, str] = {}

    def convert(self) -> Workflow:
        self._emit(Scope(self.root))
        if self.unknown:
            raise UnknownNodeTypesError(list(self.unknown.values()))
        return Workflow.from_api(self.api)

    # -- emitting executable nodes -----------------------------------------------------

    def _emit(self, scope: Scope) -> None:
        for node_id, node in scope.graph.nodes.items():
            node_type_name = str(node["type"])
            mode = int(node.get("mode", MODE_ALWAYS) or 0)
            if node_type_name in VIRTUAL_TYPES or mode in (MODE_NEVER, MODE_BYPASS):
                continue
            if node_type_name in self.subgraphs:
                if scope.depth > MAX_DEPTH:
                    raise WorkflowFormatError(
                        f"Subgraphs nest more than {MAX_DEPTH} levels (recursive?)"
                    )
                self._emit(
                    Scope(
                        self.subgraphs[node_type_name],
                        f"{scope.flat_id(node_id)}:",
                        scope,
                        node,
                        scope.depth + 1,
                    )
                )
                continue
            node_type = self.registry.get(node_type_name)
            flat_id = scope.flat_id(node_id)
            if node_type is None:
                self.unknown[flat_id] = node_type_name
                continue
            self.api[flat_id] = self._node(scope, node, node_type)

    def _node(self, scope: Scope, node: Mapping[str, Any], node_type: NodeType) -> dict[str, Any]:
        inputs: dict[str, Any] = map_widget_values(node_type, node.get("widgets_values"))
        for entry in node.get("inputs") or []:
            link_id = entry.get("link")
            if link_id is None:
                continue
            name = _input_name(entry)
            resolved = self._resolve_link(scope, int(link_id))
            if isinstance(resolved, Source):
                inputs[name] = [resolved.node_id, resolved.slot]
            elif isinstance(resolved, Literal):
                inputs[name] = resolved.value
        title = node.get("title") or node_type.display_name or node_type.class_type
        return {"inputs": inputs, "class_type": node_type.class_type, "_meta": {"title": title}}

    # -- resolving where a link's value comes from -------------------------------------

    def _resolve_link(self, scope: Scope, link_id: int, hops: int = 0) -> Resolved:
        if hops > MAX_HOPS:
            raise WorkflowFormatError(
                f"Link {link_id} passes through more than {MAX_HOPS} reroutes, bypassed nodes "
                "or subgraph boundaries: the links form a loop",
                link_id=link_id,
            )
        link = scope.graph.links.get(link_id)
        if link is None:
            return None
        return self._resolve_output(scope, link.origin_id, link.origin_slot, hops + 1)

    def _resolve_output(self, scope: Scope, node_id: int, slot: int, hops: int) -> Resolved:
        if scope.depth > MAX_DEPTH:
            raise WorkflowFormatError(f"Subgraphs nest more than {MAX_DEPTH} levels (recursive?)")
        if node_id == SUBGRAPH_INPUT_NODE:
            return self._resolve_subgraph_input(scope, slot, hops)
        node = scope.graph.nodes.get(node_id)
        if node is None:
            return None
        node_type_name = str(node["type"])
        mode = int(node.get("mode", MODE_ALWAYS) or 0)
        if mode == MODE_NEVER or node_type_name in NOTE_TYPES:
            return None
        if node_type_name == REROUTE:
            return self._through_first_input(scope, node, hops)
        if node_type_name == PRIMITIVE:
            values = node.get("widgets_values") or []
            return Literal(values[0]) if values else None
        if mode == MODE_BYPASS:
            return self._through_bypass(scope, node, slot, hops)
        if node_type_name in self.subgraphs:
            inner = Scope(
                self.subgraphs[node_type_name],
                f"{scope.flat_id(node_id)}:",
                scope,
                node,
                scope.depth + 1,
            )
            return self._resolve_subgraph_output(inner, slot, hops)
        return Source(scope.flat_id(node_id), slot)

    def _through_first_input(self, scope: Scope, node: Mapping[str, Any], hops: int) -> Resolved:
        for entry in node.get("inputs") or []:
            if entry.get("link") is not None:
                return self._resolve_link(scope, int(entry["link"]), hops)
        return None

    def _through_bypass(
        self, scope: Scope, node: Mapping[str, Any], slot: int, hops: int
    ) -> Resolved:
        """A bypassed node passes one input through to the output asked for, chosen like
        the ComfyUI frontend does: the input at the same index if its type fits, else the
        first input of exactly that type, else the first compatible one. Exactly one input
        is chosen (no retries), so long bypass chains resolve in linear time."""
        outputs = node.get("outputs") or []
        wanted = outputs[slot].get("type") if slot < len(outputs) else "*"
        inputs = node.get("inputs") or []
        chosen: Mapping[str, Any] | None = None
        if slot < len(inputs) and _types_match(inputs[slot].get("type"), wanted):
            chosen = inputs[slot]
        if chosen is None:
            chosen = next((e for e in inputs if e.get("type") == wanted), None)
        if chosen is None:
            chosen = next((e for e in inputs if _types_match(e.get("type"), wanted)), None)
        if chosen is None or chosen.get("link") is None:
            return None
        return self._resolve_link(scope, int(chosen["link"]), hops)

    def _resolve_subgraph_output(self, inner: Scope, slot: int, hops: int) -> Resolved:
        for link in inner.graph.links.values():
            if link.target_id == SUBGRAPH_OUTPUT_NODE and link.target_slot == slot:
                return self._resolve_output(inner, link.origin_id, link.origin_slot, hops + 1)
        return None

    def _resolve_subgraph_input(self, scope: Scope, slot: int, hops: int) -> Resolved:
        """Inside a subgraph, input ``slot`` comes from the instance node's matching input
        (by name) in the parent graph, or from the instance's widget value."""
        if scope.parent is None or scope.instance is None or slot >= len(scope.graph.inputs):
            return None
        sub_input = scope.graph.inputs[slot]
        name = sub_input.get("name")
        instance_inputs = scope.instance.get("inputs") or []
        for entry in instance_inputs:
            if entry.get("name") == name and entry.get("link") is not None:
                return self._resolve_link(scope.parent, int(entry["link"]), hops)
        values = scope.instance.get("widgets_values")
        if isinstance(values, Mapping):
            return Literal(values[name]) if name in values else None
        if not isinstance(values, list) or not values:
            # Newer files (properties.proxyWidgets) keep the value in the inner node.
            return None
        widget_inputs = [i for i in scope.graph.inputs if _type_set(i.get("type")) & WIDGET_TYPES]
        if sub_input not in widget_inputs:
            return None
        linked = {e.get("name") for e in instance_inputs if e.get("link") is not None}
        unlinked = [i for i in widget_inputs if i.get("name") not in linked]
        # Older files hold one value per widget-typed subgraph input; some only for the
        # inputs not linked in the parent graph.
        if len(values) != len(widget_inputs) and len(values) == len(unlinked):
            widget_inputs = unlinked
        index = widget_inputs.index(sub_input)
        return Literal(values[index]) if index < len(values) else None


def ui_to_api(document: Mapping[str, Any], registry: NodeRegistry) -> Workflow:
    """Convert a UI-format workflow. Raises :class:`UnknownNodeTypesError` naming every
    node type the registry lacks, or :class:`WorkflowFormatError` for unreadable files."""
    if not isinstance(document, Mapping) or not isinstance(document.get("nodes"), list):
        raise WorkflowFormatError("Not a UI-format workflow: expected an object with a nodes list")
    return _Converter(document, registry).convert()
