"""API-format workflows laid out for the canvas convert back to themselves: midrun's
examples and the real templates of ``comfyui-workflow-templates-json``, with the node
types midrun lacks declared from the files (subgraphs come back flattened, their
``"12:5"`` ids renumbered)."""

from __future__ import annotations

import json

import pytest

from midrun.core.errors import UnknownNodeTypesError
from midrun.graph.ui_format import ui_to_api
from midrun.graph.ui_layout import api_to_ui, canvas_ids
from midrun.graph.workflow import Workflow, as_link
from midrun.nodes import builtin_registry
from midrun.server.files import EXAMPLES_DIR
from tests.test_templates import _declare_from_files, templates


@pytest.fixture(scope="module")
def registry():
    return builtin_registry()


def round_trip(workflow: Workflow, registry) -> dict:
    document = api_to_ui(workflow, registry)
    json.dumps(document, allow_nan=False)  # what is served must be plain JSON
    return ui_to_api(document, registry).to_api()


@pytest.mark.parametrize("path", sorted(EXAMPLES_DIR.glob("*.json")), ids=lambda p: p.stem)
def test_examples_round_trip(path, registry) -> None:
    workflow = Workflow.from_api(json.loads(path.read_text()))
    assert round_trip(workflow, registry) == workflow.to_api()


def test_layout_places_sources_left_and_keeps_nodes_apart(registry) -> None:
    workflow = Workflow.from_api(json.loads((EXAMPLES_DIR / "demo_txt2img.json").read_text()))
    document = api_to_ui(workflow, registry)
    by_type = {n["type"]: n for n in document["nodes"]}
    x = {t: n["pos"][0] for t, n in by_type.items()}
    assert x["CheckpointLoaderSimple"] < x["CLIPTextEncode"] < x["KSampler"] < x["VAEDecode"]
    assert x["VAEDecode"] < x["SaveImage"]
    boxes = [(n["pos"][0], n["pos"][1], n["pos"][0] + n["size"][0], n["pos"][1] + n["size"][1])
             for n in document["nodes"]]  # fmt: skip
    for i, a in enumerate(boxes):
        for b in boxes[i + 1:]:
            assert a[2] <= b[0] or b[2] <= a[0] or a[3] <= b[1] or b[3] <= a[1], (a, b)
    sampler = by_type["KSampler"]
    assert sampler["widgets_values"][:2] == [7, "fixed"]  # seed, then control_after_generate
    assert {i["name"] for i in sampler["inputs"]} == {"model", "positive", "negative",
                                                      "latent_image"}  # fmt: skip
    assert len(document["links"]) == sum(len(o["links"]) for n in document["nodes"]
                                         for o in n["outputs"])  # fmt: skip


def test_unknown_types_are_named(registry) -> None:
    workflow = Workflow.from_api({"1": {"class_type": "NoSuchNode", "inputs": {}}})
    with pytest.raises(UnknownNodeTypesError, match="NoSuchNode"):
        api_to_ui(workflow, registry)


def renumbered(workflow: Workflow) -> dict:
    ids = {node_id: str(n) for node_id, n in canvas_ids(list(workflow.nodes)).items()}
    api = {}
    for node_id, entry in workflow.to_api().items():
        inputs = {k: [ids[v[0]], v[1]] if isinstance(v, list) and len(v) == 2
                  and v[0] in ids else v for k, v in entry["inputs"].items()}  # fmt: skip
        api[ids[node_id]] = {**entry, "inputs": inputs}
    return api


def canvas_representable(workflow: Workflow, registry) -> bool:
    for spec in workflow.nodes.values():
        node_type = registry[spec.class_type]
        for name, value in spec.inputs.items():
            declared = node_type.input(name)
            if declared is None or (not declared.is_widget and as_link(value) is None):
                return False
    return True


def test_real_templates_round_trip() -> None:
    """Every template, with the node types midrun lacks declared from the files, except
    those where a value reaches a socket-only input (from a subgraph's widget): a canvas
    can only hold such a value in a widget."""
    registry = _declare_from_files(builtin_registry())
    checked = 0
    for name, document in templates().items():
        workflow = ui_to_api(document, registry)
        if not canvas_representable(workflow, registry):
            continue
        assert round_trip(workflow, registry) == renumbered(workflow), name
        checked += 1
    assert checked > 500, checked
