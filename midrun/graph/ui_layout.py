"""Laying out an API-format workflow as a saved canvas (ComfyUI's UI format, schema 0.4).

The canvas loads only UI-format files, while midrun's examples are API format (what jobs
run). :func:`api_to_ui` places nodes in columns by their depth in the graph (sources on the
left), sizes them from their sockets and widgets, numbers the links, and writes each
node's widget values in canvas order, with the ``control_after_generate`` value after seed
widgets that the canvas expects. Converting the result back with
:func:`midrun.graph.ui_format.ui_to_api` gives the same workflow.
"""

from __future__ import annotations

from typing import Any

from midrun.core.errors import UnknownNodeTypesError
from midrun.graph.registry import NodeRegistry
from midrun.graph.types import InputSpec, NodeType
from midrun.graph.ui_format import has_control_value
from midrun.graph.workflow import Workflow, as_link

COLUMN_WIDTH, NODE_WIDTH, GAP = 340, 300, 40
ORIGIN = (0.0, 0.0)
#: The canvas area the opening view fits the graph into (a laptop screen less the
#: frontend's side bar and top bar), its top-left margin, and the smallest zoom used (the
#: canvas stops drawing widgets when zoomed out further).
VIEW, MARGIN, MIN_SCALE = (1240.0, 620.0), (70.0, 120.0), 0.65
TITLE_HEIGHT, ROW_HEIGHT, TEXT_HEIGHT = 30, 24, 110


def _depths(workflow: Workflow) -> dict[str, int]:
    """Longest distance from a source node, for each node."""
    depths: dict[str, int] = {}

    def depth(node_id: str, trail: frozenset[str]) -> int:
        if node_id in depths:
            return depths[node_id]
        found = 0
        for _, link in workflow[node_id].links():
            if link.node_id in workflow and link.node_id not in trail:
                found = max(found, depth(link.node_id, trail | {node_id}) + 1)
        depths[node_id] = found
        return found

    for node_id in workflow.nodes:
        depth(node_id, frozenset())
    return depths


def _height(node_type: NodeType, widgets: list[InputSpec]) -> int:
    rows = max(len([s for s in node_type.inputs if not s.is_widget and s.section != "hidden"]),
               len(node_type.outputs))  # fmt: skip
    height = TITLE_HEIGHT + rows * ROW_HEIGHT + 10
    for spec in widgets:
        height += TEXT_HEIGHT if spec.multiline else ROW_HEIGHT
        if has_control_value(spec):
            height += ROW_HEIGHT
        if spec.image_upload:
            height += ROW_HEIGHT + 200  # the upload button and the image shown
    return height


def api_to_ui(workflow: Workflow, registry: NodeRegistry) -> dict[str, Any]:
    """The workflow as a UI-format document the ComfyUI frontend loads. Raises
    :class:`UnknownNodeTypesError` naming node types the registry lacks."""
    types = {node_id: registry.get(spec.class_type) for node_id, spec in workflow.nodes.items()}
    unknown = [workflow[n].class_type for n, t in types.items() if t is None]
    if unknown:
        raise UnknownNodeTypesError(unknown)
    ids = canvas_ids(list(workflow.nodes))
    depths = _depths(workflow)
    order = sorted(workflow.nodes, key=lambda n: (depths[n], ids[n]))
    links: list[list[Any]] = []
    outgoing: dict[tuple[str, int], list[int]] = {}
    incoming: dict[tuple[str, str], int] = {}
    for target in order:
        for name, link in workflow[target].links():
            source_type = types.get(link.node_id)
            if source_type is None or link.output >= len(source_type.outputs):
                continue
            link_id = len(links) + 1
            kind = source_type.outputs[link.output].type
            links.append([link_id, ids[link.node_id], link.output, ids[target], 0, kind])
            outgoing.setdefault((link.node_id, link.output), []).append(link_id)
            incoming[(target, name)] = link_id
    column_y: dict[int, float] = {}
    nodes: list[dict[str, Any]] = []
    slot_of: dict[int, int] = {}
    for index, node_id in enumerate(order):
        spec, node_type = workflow[node_id], types[node_id]
        assert node_type is not None
        widgets = node_type.widget_inputs
        inputs: list[dict[str, Any]] = []
        for input_spec in node_type.inputs:
            link_id = incoming.get((node_id, input_spec.name))
            if input_spec.section == "hidden" or (input_spec.is_widget and link_id is None):
                continue
            entry: dict[str, Any] = {"name": input_spec.name, "type": input_spec.type,
                                     "link": link_id}  # fmt: skip
            if input_spec.is_widget:
                entry["widget"] = {"name": input_spec.name}
            if link_id is not None:
                slot_of[link_id] = len(inputs)
            inputs.append(entry)
        outputs = [{"name": out.display_name, "type": out.type,
                    "links": outgoing.get((node_id, slot), [])}
                   for slot, out in enumerate(node_type.outputs)]  # fmt: skip
        values: list[Any] = []
        given = 0  # widgets after the last one the workflow sets are left out
        for widget in widgets:
            value = spec.inputs.get(widget.name, widget.default)
            values.append(None if as_link(value) is not None else value)
            if has_control_value(widget):
                values.append("fixed")
            if widget.name in spec.inputs:
                given = len(values)
        del values[given:]
        column = depths[node_id]
        height = _height(node_type, widgets)
        y = column_y.get(column, ORIGIN[1])
        column_y[column] = y + height + GAP
        node: dict[str, Any] = {
            "id": ids[node_id], "type": spec.class_type,
            "pos": [ORIGIN[0] + column * COLUMN_WIDTH, y], "size": [NODE_WIDTH, height],
            "flags": {}, "order": index, "mode": 0, "inputs": inputs, "outputs": outputs,
            "properties": {"Node name for S&R": spec.class_type}, "widgets_values": values,
        }  # fmt: skip
        if spec.title and spec.title != (node_type.display_name or spec.class_type):
            node["title"] = spec.title
        nodes.append(node)
    for link in links:
        link[4] = slot_of.get(link[0], 0)
    return {
        "extra": {"ds": _fit([(n["pos"], n["size"]) for n in nodes])},
        "last_node_id": max(ids.values(), default=0),
        "last_link_id": len(links),
        "nodes": nodes,
        "links": links,
        "groups": [],
        "config": {},
        "version": 0.4,
    }


def _fit(boxes: list[tuple[list[float], list[int]]]) -> dict[str, Any]:
    """The opening view (``extra.ds``): the whole graph in :data:`VIEW`, never zoomed in."""
    if not boxes:
        return {"scale": 1.0, "offset": [0.0, 0.0]}
    left = min(pos[0] for pos, _ in boxes)
    top = min(pos[1] for pos, _ in boxes) - TITLE_HEIGHT
    width = max(pos[0] + size[0] for pos, size in boxes) - left
    height = max(pos[1] + size[1] for pos, size in boxes) - top
    scale = round(max(MIN_SCALE, min(1.0, VIEW[0] / width, VIEW[1] / height)), 3)
    return {"scale": scale, "offset": [MARGIN[0] / scale - left, MARGIN[1] / scale - top]}


def canvas_ids(node_ids: list[str]) -> dict[str, int]:
    """The canvas numbers nodes; other ids get the next free numbers."""
    ids = {n: int(n) for n in node_ids if n.isdigit()}
    free = max(ids.values(), default=0)
    for node_id in node_ids:
        if node_id not in ids:
            free += 1
            ids[node_id] = free
    return ids
