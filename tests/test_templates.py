"""Real workflows written by others: the ~640 UI-format files of the PyPI package
``comfyui-workflow-templates-json``. Every file whose node types midrun defines converts
and validates; every other file fails naming the unknown types; positional widget values
map to the names the package itself records (``widgets_values_named``)."""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import pytest

from midrun.core.errors import UnknownNodeTypesError
from midrun.graph.registry import NodeRegistry
from midrun.graph.types import COMBO
from midrun.graph.ui_format import CONTROL_VALUES, VIRTUAL_TYPES, map_widget_values, ui_to_api
from midrun.graph.validation import validate
from midrun.nodes import builtin_registry


@cache
def templates() -> dict[str, dict[str, Any]]:
    folder = resources.files("comfyui_workflow_templates_json") / "templates"
    found = {}
    for entry in folder.iterdir():
        if entry.name.endswith(".json"):
            document = json.loads(entry.read_text(encoding="utf-8"))
            if isinstance(document, dict) and isinstance(document.get("nodes"), list):
                found[entry.name] = document
    return found


def all_nodes(document: dict[str, Any]) -> list[dict[str, Any]]:
    nodes = list(document["nodes"])
    for subgraph in (document.get("definitions") or {}).get("subgraphs") or []:
        nodes += subgraph["nodes"]
    return nodes


def undefined_types(document: dict[str, Any], registry: NodeRegistry) -> set[str]:
    """Types of live, non-virtual nodes that the registry lacks (computed from the file)."""
    subgraph_ids = {s["id"] for s in (document.get("definitions") or {}).get("subgraphs") or []}
    return {
        n["type"]
        for n in all_nodes(document)
        if n.get("mode", 0) not in (2, 4)
        and n["type"] not in VIRTUAL_TYPES
        and n["type"] not in subgraph_ids
        and n["type"] not in registry
    }


def test_corpus_is_present() -> None:
    assert len(templates()) > 600


def test_every_template_converts_or_names_its_unknown_types(tmp_path: Path) -> None:
    probe = builtin_registry()
    converted: list[str] = []
    for name, document in sorted(templates().items()):
        missing = undefined_types(document, probe)
        try:
            workflow = ui_to_api(document, probe)
        except UnknownNodeTypesError as exc:
            assert exc.class_types, name
            assert set(exc.class_types) <= missing, (name, exc.class_types, missing)
            for class_type in exc.class_types:
                assert class_type in str(exc)
            continue
        assert not missing, (name, missing)
        converted.append(name)
        # A user running this file has its models and images: give them those names.
        models, images = tmp_path / name / "models", tmp_path / name / "input"
        for spec in workflow.nodes.values():
            node_type = probe[spec.class_type]
            for input_spec in node_type.inputs:
                value = spec.inputs.get(input_spec.name)
                if input_spec.type != COMBO or input_spec.choices_source is None:
                    continue
                if not isinstance(value, str):
                    continue
                folder = (
                    images
                    if input_spec.choices_source == "input_images"
                    else (models / input_spec.choices_source)
                )
                (folder / value).parent.mkdir(parents=True, exist_ok=True)
                (folder / value).write_bytes(b"")
        registry = builtin_registry(models_dir=models, input_dir=images)
        result = validate(workflow, registry)
        assert result.ok, (name, result.error, result.node_errors)
    assert len(converted) >= 3, converted


def test_widget_values_map_to_recorded_names() -> None:
    registry = builtin_registry()
    checked = 0
    for name, document in templates().items():
        for node in all_nodes(document):
            node_type = registry.get(node["type"])
            named = node.get("widgets_values_named")
            if node_type is None or not isinstance(named, dict):
                continue
            mapped = map_widget_values(node_type, node.get("widgets_values"))
            for field, value in mapped.items():
                if field not in named:
                    continue
                if node_type.input(field).image_upload:
                    # The packager rewrote uploaded image names (content hashes, other
                    # files) in the named copy only; positions are still checked below.
                    continue
                assert value == named[field], (name, node["id"], node["type"], field)
                checked += 1
            # Nothing positional was swallowed: every recorded widget is mapped unless it
            # is an extra control value (seed control, upload button).
            extra = {k for k, v in named.items() if k not in mapped}
            for key in extra:
                assert named[key] in CONTROL_VALUES | {"image", "upload"} or key in (
                    "control_after_generate",
                    "upload",
                ), (name, node["type"], key)
    assert checked > 500


@pytest.mark.parametrize("name", ["image_sdxl_simple.json", "sdxl_simple_example.json"])
def test_known_sdxl_template_converts_to_expected_graph(name: str) -> None:
    document = templates()[name]
    workflow = ui_to_api(document, builtin_registry())
    classes = sorted(s.class_type for s in workflow.nodes.values())
    assert "KSampler" in classes or "KSamplerAdvanced" in classes
    assert "SaveImage" in classes
    for spec in workflow.nodes.values():
        if spec.class_type in ("KSampler", "KSamplerAdvanced"):
            assert isinstance(spec.inputs["model"], list)
            assert (
                spec.inputs["sampler_name"]
                in builtin_registry()[spec.class_type].input("sampler_name").choices
            )


def _declare_from_files(registry: NodeRegistry) -> NodeRegistry:
    """Declare every type the corpus uses and midrun lacks, from the files' own slot data
    merged over all occurrences: widget names from ``widgets_values_named``, link inputs
    and outputs from the slots (the longest output list seen: node versions differ)."""
    from midrun.graph.types import InputSpec, NodeType, OutputSpec

    kinds = {bool: "BOOLEAN", int: "INT", float: "FLOAT", str: "STRING"}
    inputs: dict[str, dict[str, InputSpec]] = {}
    outputs: dict[str, list[OutputSpec]] = {}
    subgraph_ids: set[str] = set()
    for document in templates().values():
        subgraph_ids |= {
            s["id"] for s in (document.get("definitions") or {}).get("subgraphs") or []
        }
        for node in all_nodes(document):
            class_type = node["type"]
            if class_type in registry or class_type in VIRTUAL_TYPES:
                continue
            named = node.get("widgets_values_named")
            named = named if isinstance(named, dict) else {}
            slots = inputs.setdefault(class_type, {})
            for key, value in named.items():
                if key in ("control_after_generate", "upload") or (
                    isinstance(value, str) and value in CONTROL_VALUES
                ):
                    continue
                slots.setdefault(
                    key, InputSpec(key, kinds.get(type(value), "STRING"), section="optional")
                )
            for slot in node.get("inputs") or []:
                slots.setdefault(slot["name"], InputSpec(slot["name"], "*", section="optional"))
            found = [OutputSpec(str(o.get("type") or "*")) for o in node.get("outputs") or []]
            if len(found) > len(outputs.get(class_type, [])):
                outputs[class_type] = found
    declared = [
        NodeType(
            name,
            tuple(slots.values()),
            tuple(outputs.get(name, [])),
            lambda **_: None,
            output_node=not outputs.get(name),
        )
        for name, slots in inputs.items()
        if name not in subgraph_ids
    ]
    return NodeRegistry([*registry, *declared])


def test_every_template_flattens_to_a_well_formed_api_graph() -> None:
    """All 644 files through the converter: links land on live nodes and real output slots,
    no virtual or subgraph-instance node survives, nested ids are path-shaped."""
    from midrun.graph.workflow import as_link

    registry = _declare_from_files(builtin_registry())
    flattened = 0
    for name, document in templates().items():
        workflow = ui_to_api(document, registry)
        subgraph_ids = {s["id"] for s in (document.get("definitions") or {}).get("subgraphs") or []}
        for node_id, spec in workflow.nodes.items():
            assert spec.class_type not in VIRTUAL_TYPES and spec.class_type not in subgraph_ids
            assert all(part.isdigit() for part in node_id.split(":")), (name, node_id)
            flattened += ":" in node_id
            for input_name, value in spec.inputs.items():
                link = as_link(value)
                if link is None:
                    continue
                assert link.node_id in workflow, (name, node_id, input_name, value)
                source = registry[workflow[link.node_id].class_type]
                assert link.output < len(source.outputs), (name, node_id, input_name, value)
        live = [
            n
            for n in document["nodes"]
            if n.get("mode", 0) not in (2, 4) and n["type"] in subgraph_ids
        ]
        for instance in live:
            assert any(i.startswith(f"{instance['id']}:") for i in workflow.nodes), (
                name,
                instance["id"],
            )
    assert flattened > 1000  # the corpus's subgraphs really were expanded
