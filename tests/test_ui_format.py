"""UI-format (saved canvas) workflows convert to the API format like ComfyUI's frontend."""

from __future__ import annotations

import pytest

from midrun.core.errors import UnknownNodeTypesError, WorkflowFormatError
from midrun.graph.loading import load_workflow
from midrun.graph.registry import NodeRegistry
from midrun.graph.ui_format import map_widget_values, ui_to_api
from midrun.graph.validation import validate


def node(id, type, inputs=(), outputs=(), widgets=None, mode=0, title=None, **extra):
    entry = {
        "id": id,
        "type": type,
        "mode": mode,
        "inputs": [dict(i) for i in inputs],
        "outputs": [dict(o) for o in outputs],
        "widgets_values": widgets if widgets is not None else [],
        **extra,
    }
    if title:
        entry["title"] = title
    return entry


def inp(name, type, link=None, widget=False):
    entry = {"name": name, "type": type, "link": link}
    if widget:
        entry["widget"] = {"name": name}
    return entry


def out(type, links=()):
    return {"name": type, "type": type, "links": list(links)}


def doc(nodes, links, **extra):
    return {
        "last_node_id": 99,
        "last_link_id": 99,
        "nodes": nodes,
        "links": links,
        "version": 0.4,
        **extra,
    }


def basic():
    """Const(1) -> Add.a ; Const(2) -> Add.b ; Add -> Output"""
    return doc(
        [
            node(1, "Const", outputs=[out("INT", [1])], widgets=[5], title="Five"),
            node(2, "Const", outputs=[out("INT", [2])], widgets=[7]),
            node(
                3, "Add", inputs=[inp("a", "INT", 1), inp("b", "INT", 2)], outputs=[out("INT", [3])]
            ),
            node(4, "Output", inputs=[inp("value", "*", 3)], widgets=["sum"]),
        ],
        [[1, 1, 0, 3, 0, "INT"], [2, 2, 0, 3, 1, "INT"], [3, 3, 0, 4, 0, "INT"]],
    )


def test_basic_conversion_maps_widgets_and_links(registry: NodeRegistry) -> None:
    api = ui_to_api(basic(), registry).to_api()
    assert api == {
        "1": {"class_type": "Const", "inputs": {"value": 5}, "_meta": {"title": "Five"}},
        "2": {"class_type": "Const", "inputs": {"value": 7}, "_meta": {"title": "Const"}},
        "3": {
            "class_type": "Add",
            "inputs": {"a": ["1", 0], "b": ["2", 0]},
            "_meta": {"title": "Add"},
        },
        "4": {
            "class_type": "Output",
            "inputs": {"label": "sum", "value": ["3", 0]},
            "_meta": {"title": "Output"},
        },
    }


def test_v1_object_links(registry: NodeRegistry) -> None:
    document = basic()
    document["version"] = 1
    document["links"] = [
        {
            "id": k[0],
            "origin_id": k[1],
            "origin_slot": k[2],
            "target_id": k[3],
            "target_slot": k[4],
            "type": k[5],
        }
        for k in document["links"]
    ]
    assert ui_to_api(document, registry).to_api() == ui_to_api(basic(), registry).to_api()


def test_control_after_generate_value_is_skipped(registry: NodeRegistry) -> None:
    from midrun.graph.types import FLOAT, INT, InputSpec, NodeType, OutputSpec

    sampler = NodeType(
        "Sampler",
        (
            InputSpec("seed", INT, default=0, control_after_generate=True),
            InputSpec("steps", INT, default=20),
            InputSpec("cfg", FLOAT, default=8.0),
        ),
        (OutputSpec(INT),),
        lambda **k: (1,),
    )
    assert map_widget_values(sampler, [123, "randomize", 25, 7.5]) == {
        "seed": 123,
        "steps": 25,
        "cfg": 7.5,
    }
    # Older files without the control value still map.
    assert map_widget_values(sampler, [123, 25, 7.5]) == {"seed": 123, "steps": 25, "cfg": 7.5}
    # Values given by name.
    assert map_widget_values(sampler, {"seed": 1, "cfg": 2.0}) == {"seed": 1, "cfg": 2.0}


def test_linked_widget_input_overrides_widget_value(registry: NodeRegistry) -> None:
    document = basic()
    # Node 5 is a Const whose value widget is converted to an input fed by node 1.
    document["nodes"].append(
        node(5, "Add", inputs=[inp("a", "INT", 4), inp("b", "INT", 5)], outputs=[out("INT")])
    )
    document["nodes"].append(node(6, "Output", inputs=[inp("value", "*", 6)]))
    document["links"] += [[4, 1, 0, 5, 0, "INT"], [5, 2, 0, 5, 1, "INT"], [6, 5, 0, 6, 0, "INT"]]
    api = ui_to_api(document, registry).to_api()
    assert api["5"]["inputs"] == {"a": ["1", 0], "b": ["2", 0]}


def test_reroutes_are_removed_and_links_resolved(registry: NodeRegistry) -> None:
    document = basic()
    # 1 -> Reroute 10 -> Reroute 11 -> Add.a
    document["nodes"] += [
        node(10, "Reroute", inputs=[inp("", "*", 10)], outputs=[out("INT", [11])]),
        node(11, "Reroute", inputs=[inp("", "*", 11)], outputs=[out("INT", [1])]),
    ]
    document["links"][0] = [1, 11, 0, 3, 0, "INT"]
    document["links"] += [[10, 1, 0, 10, 0, "INT"], [11, 10, 0, 11, 0, "INT"]]
    api = ui_to_api(document, registry).to_api()
    assert "10" not in api and "11" not in api
    assert api["3"]["inputs"]["a"] == ["1", 0]


def test_primitive_node_value_is_written_into_targets(registry: NodeRegistry) -> None:
    document = basic()
    document["nodes"][2]["inputs"][0] = inp("a", "INT", 1, widget=True)
    document["nodes"].append(
        node(20, "PrimitiveNode", outputs=[out("INT", [1])], widgets=[42, "fixed"])
    )
    document["links"][0] = [1, 20, 0, 3, 0, "INT"]
    api = ui_to_api(document, registry).to_api()
    assert "20" not in api and api["3"]["inputs"]["a"] == 42


def test_notes_are_dropped(registry: NodeRegistry) -> None:
    document = basic()
    document["nodes"] += [
        node(30, "Note", widgets=["hello"]),
        node(31, "MarkdownNote", widgets=["# hi"]),
    ]
    api = ui_to_api(document, registry).to_api()
    assert set(api) == {"1", "2", "3", "4"}


def test_muted_node_is_removed_and_its_links_dropped(registry: NodeRegistry) -> None:
    document = basic()
    document["nodes"][1]["mode"] = 2  # mute Const 2
    workflow = ui_to_api(document, registry)
    assert "2" not in workflow and "b" not in workflow["3"].inputs
    result = validate(workflow, registry)
    assert result.node_errors["3"]["errors"][0]["type"] == "required_input_missing"


def test_bypassed_node_passes_matching_input_through(registry: NodeRegistry) -> None:
    document = basic()
    # Insert Scale-like INT pass: Add2(a=Const1, b=Const2) bypassed between Add and Output.
    document["nodes"].append(
        node(
            40,
            "Add",
            inputs=[inp("a", "INT", 40), inp("b", "INT", 41)],
            outputs=[out("INT", [42])],
            mode=4,
        )
    )
    document["links"][2] = [3, 3, 0, 40, 0, "INT"]
    document["links"] += [
        [40, 3, 0, 40, 0, "INT"],
        [41, 2, 0, 40, 1, "INT"],
        [42, 40, 0, 4, 0, "INT"],
    ]
    document["nodes"][2]["outputs"][0]["links"] = [40]
    api = ui_to_api(document, registry).to_api()
    assert "40" not in api
    assert api["4"]["inputs"]["value"] == ["3", 0]  # slot 0 of the bypassed node


def test_bypass_falls_back_to_first_input_of_matching_type(registry: NodeRegistry) -> None:
    document = basic()
    # Bypassed Scale(x FLOAT <- ..., output FLOAT): output slot 0 matches input slot 0 by
    # type; make slot 0 a mismatching type to force the by-type search.
    document["nodes"].append(
        node(
            50,
            "Scale",
            mode=4,
            inputs=[inp("mode", "COMBO", None), inp("x", "INT", 50)],
            outputs=[out("INT", [51])],
        )
    )
    document["links"] += [[50, 2, 0, 50, 1, "INT"], [51, 50, 0, 4, 0, "INT"]]
    document["links"] = [k for k in document["links"] if k[0] != 3]
    document["nodes"][3]["inputs"][0]["link"] = 51
    api = ui_to_api(document, registry).to_api()
    assert api["4"]["inputs"]["value"] == ["2", 0]


def test_bypassed_chain_and_unknown_bypassed_type(registry: NodeRegistry) -> None:
    """Bypassed nodes need no definition; chains of them resolve to the first live source."""
    document = basic()
    document["nodes"] += [
        node(
            60, "SomeCustomFilter", mode=4, inputs=[inp("x", "INT", 60)], outputs=[out("INT", [61])]
        ),
        node(61, "AnotherCustom", mode=4, inputs=[inp("x", "INT", 61)], outputs=[out("INT", [62])]),
    ]
    document["links"] += [
        [60, 3, 0, 60, 0, "INT"],
        [61, 60, 0, 61, 0, "INT"],
        [62, 61, 0, 4, 0, "INT"],
    ]
    document["nodes"][3]["inputs"][0]["link"] = 62
    api = ui_to_api(document, registry).to_api()
    assert api["4"]["inputs"]["value"] == ["3", 0]


def test_unknown_node_types_are_all_named(registry: NodeRegistry) -> None:
    document = basic()
    document["nodes"] += [
        node(70, "FancyUpscaler"),
        node(71, "FancyUpscaler"),
        node(72, "MagicNode"),
    ]
    with pytest.raises(UnknownNodeTypesError) as info:
        ui_to_api(document, registry)
    assert info.value.class_types == ["FancyUpscaler", "MagicNode"]
    assert "FancyUpscaler" in str(info.value) and "MagicNode" in str(info.value)


def subgraph_document():
    """Root: Const 1 -> [subgraph instance 12: Add(input a, widget b) -> output] -> Output."""
    sub_id = "11111111-2222-3333-4444-555555555555"
    inner_nodes = [
        node(
            5,
            "Add",
            inputs=[inp("a", "INT", 101), inp("b", "INT", 102, widget=True)],
            outputs=[out("INT", [103])],
        ),
        node(6, "Const", outputs=[out("INT", [104])], widgets=[1000]),
        node(
            7,
            "Add",
            inputs=[inp("a", "INT", 103), inp("b", "INT", 104)],
            outputs=[out("INT", [105])],
        ),
    ]
    subgraph = {
        "id": sub_id,
        "version": 1,
        "name": "Adder",
        "inputNode": {"id": -10},
        "outputNode": {"id": -20},
        "inputs": [
            {"id": "i1", "name": "a", "type": "INT", "linkIds": [101]},
            {"id": "i2", "name": "b", "type": "INT", "linkIds": [102]},
        ],
        "outputs": [{"id": "o1", "name": "INT", "type": "INT", "linkIds": [105]}],
        "widgets": [],
        "nodes": inner_nodes,
        "links": [
            {
                "id": 101,
                "origin_id": -10,
                "origin_slot": 0,
                "target_id": 5,
                "target_slot": 0,
                "type": "INT",
            },
            {
                "id": 102,
                "origin_id": -10,
                "origin_slot": 1,
                "target_id": 5,
                "target_slot": 1,
                "type": "INT",
            },
            {
                "id": 103,
                "origin_id": 5,
                "origin_slot": 0,
                "target_id": 7,
                "target_slot": 0,
                "type": "INT",
            },
            {
                "id": 104,
                "origin_id": 6,
                "origin_slot": 0,
                "target_id": 7,
                "target_slot": 1,
                "type": "INT",
            },
            {
                "id": 105,
                "origin_id": 7,
                "origin_slot": 0,
                "target_id": -20,
                "target_slot": 0,
                "type": "INT",
            },
        ],
    }
    root = [
        node(1, "Const", outputs=[out("INT", [1])], widgets=[3]),
        node(12, sub_id, inputs=[inp("a", "INT", 1)], outputs=[out("INT", [2])], widgets=[40]),
        node(4, "Output", inputs=[inp("value", "*", 2)], widgets=["out"]),
    ]
    links = [[1, 1, 0, 12, 0, "INT"], [2, 12, 0, 4, 0, "INT"]]
    return doc(root, links, definitions={"subgraphs": [subgraph]}), sub_id


def test_subgraphs_are_flattened_with_path_ids(registry: NodeRegistry) -> None:
    document, _ = subgraph_document()
    api = ui_to_api(document, registry).to_api()
    assert set(api) == {"1", "12:5", "12:6", "12:7", "4"}
    assert api["12:5"]["inputs"] == {"a": ["1", 0], "b": 40}
    assert api["12:7"]["inputs"] == {"a": ["12:5", 0], "b": ["12:6", 0]}
    assert api["4"]["inputs"]["value"] == ["12:7", 0]
    assert validate(load_workflow(document, registry), registry).ok


def test_nested_subgraphs_get_nested_ids(registry: NodeRegistry) -> None:
    document, sub_id = subgraph_document()
    outer_id = "99999999-2222-3333-4444-555555555555"
    outer = {
        "id": outer_id,
        "version": 1,
        "name": "Outer",
        "inputs": [{"id": "x", "name": "a", "type": "INT", "linkIds": [201]}],
        "outputs": [{"id": "y", "name": "INT", "type": "INT", "linkIds": [202]}],
        "nodes": [
            node(
                3, sub_id, inputs=[inp("a", "INT", 201)], outputs=[out("INT", [202])], widgets=[50]
            )
        ],
        "links": [
            {
                "id": 201,
                "origin_id": -10,
                "origin_slot": 0,
                "target_id": 3,
                "target_slot": 0,
                "type": "INT",
            },
            {
                "id": 202,
                "origin_id": 3,
                "origin_slot": 0,
                "target_id": -20,
                "target_slot": 0,
                "type": "INT",
            },
        ],
    }
    document["definitions"]["subgraphs"].append(outer)
    document["nodes"][1]["type"] = outer_id
    api = ui_to_api(document, registry).to_api()
    assert set(api) == {"1", "12:3:5", "12:3:6", "12:3:7", "4"}
    assert api["12:3:5"]["inputs"] == {"a": ["1", 0], "b": 50}
    assert api["4"]["inputs"]["value"] == ["12:3:7", 0]


def test_load_workflow_detects_formats(registry: NodeRegistry) -> None:
    api = ui_to_api(basic(), registry).to_api()
    assert load_workflow(api, registry).to_api() == api
    assert load_workflow({"prompt": api, "client_id": "x"}, registry).to_api() == api
    for bad in ([], {"nodes": "nope"}, {"1": {"inputs": {}}}, "text"):
        with pytest.raises(WorkflowFormatError):
            load_workflow(bad, registry)


def test_reroute_loops_and_recursive_subgraphs_are_refused(registry: NodeRegistry) -> None:
    loop = doc(
        [
            node(1, "Reroute", inputs=[inp("", "*", 2)], outputs=[out("*", [1])]),
            node(2, "Reroute", inputs=[inp("", "*", 1)], outputs=[out("*", [2, 3])]),
            node(3, "Output", inputs=[inp("value", "*", 3)], widgets=["x"]),
        ],
        [[1, 1, 0, 2, 0, "*"], [2, 2, 0, 1, 0, "*"], [3, 2, 0, 3, 0, "*"]],
    )
    with pytest.raises(WorkflowFormatError, match="loop"):
        ui_to_api(loop, registry)
    recursive = {
        "id": "S",
        "inputs": [],
        "outputs": [{"name": "o", "type": "INT"}],
        "nodes": [node(1, "S", outputs=[out("INT", [9])])],
        "links": [
            {
                "id": 9,
                "origin_id": 1,
                "origin_slot": 0,
                "target_id": -20,
                "target_slot": 0,
                "type": "INT",
            }
        ],
    }
    document = doc(
        [
            node(6, "Output", inputs=[inp("value", "*", 1)], widgets=["x"]),
            node(5, "S", outputs=[out("INT", [1])]),
        ],
        [[1, 5, 0, 6, 0, "INT"]],
        definitions={"subgraphs": [recursive]},
    )
    with pytest.raises(WorkflowFormatError, match="nest"):
        ui_to_api(document, registry)


def test_list_valued_widgets_are_unwrapped(registry: NodeRegistry) -> None:
    const = registry["Const"]
    assert map_widget_values(const, [{"__value__": [1, 2]}]) == {"value": [1, 2]}
    assert map_widget_values(const, [{"other": 1}]) == {"value": {"other": 1}}
