"""Validation reports every problem with ComfyUI's error shapes."""

from __future__ import annotations

from midrun.graph.registry import NodeRegistry
from midrun.graph.validation import validate
from midrun.graph.workflow import Workflow


def wf(doc: dict) -> Workflow:
    return Workflow.from_api(doc)


def chain(value=1) -> dict:
    return {
        "1": {"class_type": "Const", "inputs": {"value": value}},
        "2": {"class_type": "Const", "inputs": {"value": 2}},
        "3": {"class_type": "Add", "inputs": {"a": ["1", 0], "b": ["2", 0]}},
        "9": {"class_type": "Output", "inputs": {"value": ["3", 0]}},
    }


def only_error(result, node_id: str) -> dict:
    errors = result.node_errors[node_id]["errors"]
    assert len(errors) == 1, errors
    error = errors[0]
    assert set(error) == {"type", "message", "details", "extra_info"}
    return error


def test_valid_workflow_reports_outputs_and_coerces(registry: NodeRegistry) -> None:
    result = validate(wf(chain(value="7")), registry)
    assert result.ok and result.error is None and result.node_errors == {}
    assert result.outputs == ["9"]
    assert result.workflow["1"].inputs["value"] == 7


def test_an_unknown_class_type_is_comfyui_missing_node_type(registry: NodeRegistry) -> None:
    doc = chain()
    doc["4"] = {"class_type": "Mystery", "inputs": {}, "_meta": {"title": "My node"}}
    doc["5"] = {"class_type": "Enigma", "inputs": {}}
    result = validate(wf(doc), registry)
    assert result.error.to_dict() == {
        "type": "missing_node_type",
        "message": "Node 'My node' not found. The custom node may not be installed.",
        "details": "Node ID '#4'",
        "extra_info": {"node_id": "4", "class_type": "Mystery", "node_title": "My node"},
    }
    assert result.node_errors == {}


def test_a_missing_class_type_is_comfyui_missing_node_type(registry: NodeRegistry) -> None:
    result = validate(wf({"1": {"inputs": {}}}), registry)
    assert result.error.to_dict() == {
        "type": "missing_node_type",
        "message": "Node 'ID #1' has no class_type. The workflow may be corrupted or a "
                   "custom node is missing.",
        "details": "Node ID '#1'",
        "extra_info": {"node_id": "1", "class_type": None, "node_title": None},
    }


def test_no_output_nodes(registry: NodeRegistry) -> None:
    result = validate(wf({"1": {"class_type": "Const", "inputs": {"value": 1}}}), registry)
    assert result.error.type == "prompt_no_outputs"


def test_required_input_missing(registry: NodeRegistry) -> None:
    doc = chain()
    del doc["3"]["inputs"]["b"]
    result = validate(wf(doc), registry)
    error = only_error(result, "3")
    assert error["type"] == "required_input_missing"
    assert error["extra_info"]["input_name"] == "b"
    assert result.node_errors["3"]["dependent_outputs"] == ["9"]
    assert result.error.type == "prompt_outputs_failed_validation"


def test_bad_linked_input_shapes(registry: NodeRegistry) -> None:
    for bad in (["1"], ["1", 0, 3], ["1", "x"], ["404", 0], ["1", 5]):
        doc = chain()
        doc["3"]["inputs"]["a"] = bad
        error = only_error(validate(wf(doc), registry), "3")
        assert error["type"] == "bad_linked_input", bad
        assert error["extra_info"]["input_name"] == "a"


def test_return_type_mismatch(registry: NodeRegistry) -> None:
    doc = chain()
    doc["5"] = {"class_type": "Scale", "inputs": {"x": ["3", 0], "factor": 1.0}}
    doc["3"]["inputs"]["a"] = ["5", 0]  # FLOAT into INT (and a cycle-free graph: 5 <- 3?)
    doc["5"]["inputs"]["x"] = ["2", 0]  # INT into FLOAT too
    result = validate(wf(doc), registry)
    errors = {e["type"] for n in result.node_errors.values() for e in n["errors"]}
    assert errors == {"return_type_mismatch"}
    error = result.node_errors["3"]["errors"][0]
    assert error["extra_info"]["received_type"] == "FLOAT"
    assert "received_type(FLOAT) mismatch input_type(INT)" in error["details"]


def test_any_and_union_types_accept_matching_links(registry: NodeRegistry) -> None:
    doc = chain()
    doc["5"] = {
        "class_type": "Scale",
        "inputs": {"x": ["3", 0], "factor": 1.0},
    }  # INT into INT,FLOAT
    doc["9"]["inputs"]["value"] = ["5", 0]  # FLOAT into *
    assert validate(wf(doc), registry).ok
    doc["5"]["inputs"]["x"] = ["1", 0]
    doc["3"]["inputs"]["b"] = ["5", 0]  # FLOAT into INT: refused
    doc["9"]["inputs"]["value"] = ["3", 0]
    result = validate(wf(doc), registry)
    assert only_error(result, "3")["type"] == "return_type_mismatch"


def test_invalid_input_type(registry: NodeRegistry) -> None:
    for bad in ("seven", 7.5, [1], {"a": 1}):
        doc = chain()
        doc["1"]["inputs"]["value"] = bad
        result = validate(wf(doc), registry)
        if isinstance(bad, list):
            assert only_error(result, "1")["type"] == "bad_linked_input"
            continue
        error = only_error(result, "1")
        assert error["type"] == "invalid_input_type", bad
        assert "INT" in error["message"]


def test_null_and_boolean_values(registry: NodeRegistry) -> None:
    doc = chain()
    doc["9"]["inputs"]["label"] = None
    assert only_error(validate(wf(doc), registry), "9")["type"] == "invalid_input_type"
    doc = chain(value=None)
    assert only_error(validate(wf(doc), registry), "1")["type"] == "invalid_input_type"


def test_value_smaller_than_min_and_bigger_than_max(registry: NodeRegistry) -> None:
    error = only_error(validate(wf(chain(value=-1001)), registry), "1")
    assert error["type"] == "value_smaller_than_min"
    assert error["extra_info"]["received_value"] == -1001
    error = only_error(validate(wf(chain(value=1001)), registry), "1")
    assert error["type"] == "value_bigger_than_max"
    assert validate(wf(chain(value=1000)), registry).ok


def test_value_not_in_list(registry: NodeRegistry) -> None:
    doc = {
        "1": {"class_type": "Const", "inputs": {"value": 1}},
        "2": {"class_type": "Scale", "inputs": {"x": ["1", 0], "mode": "pow"}},
        "9": {"class_type": "Output", "inputs": {"value": ["2", 0]}},
    }
    doc["2"]["inputs"]["x"] = ["1", 0]
    result = validate(wf(doc), registry)
    errors = {e["type"] for e in result.node_errors["2"]["errors"]}
    assert "value_not_in_list" in errors
    detail = next(e for e in result.node_errors["2"]["errors"] if e["type"] == "value_not_in_list")
    assert "'pow' not in ['mul', 'div']" in detail["details"]


def test_dependency_cycle_names_the_nodes(registry: NodeRegistry) -> None:
    doc = {
        "1": {"class_type": "Add", "inputs": {"a": ["2", 0], "b": ["3", 0]}},
        "2": {"class_type": "Add", "inputs": {"a": ["1", 0], "b": ["3", 0]}},
        "3": {"class_type": "Const", "inputs": {"value": 1}},
        "9": {"class_type": "Output", "inputs": {"value": ["1", 0]}},
    }
    result = validate(wf(doc), registry)
    assert result.error.type == "dependency_cycle"
    assert set(result.error.extra_info["nodes"]) == {"1", "2"}
    assert "1" in result.error.message and "2" in result.error.message
    assert set(result.node_errors) == {"1", "2"}


def test_only_output_ancestry_is_validated(registry: NodeRegistry) -> None:
    doc = chain()
    doc["7"] = {"class_type": "Const", "inputs": {"value": "not a number"}}  # feeds nothing
    result = validate(wf(doc), registry)
    assert result.ok and result.outputs == ["9"]


def test_partial_execution_targets(registry: NodeRegistry) -> None:
    doc = chain()
    doc["8"] = {"class_type": "Output", "inputs": {"value": ["1", 0]}}
    doc["3"]["inputs"]["b"] = ["2", 7]  # break only node 9's branch
    full = validate(wf(doc), registry)
    assert not full.ok and full.outputs == ["8"]
    assert full.node_errors["3"]["dependent_outputs"] == ["9"]
    partial = validate(wf(doc), registry, partial_execution_targets=["8"])
    assert partial.ok and partial.outputs == ["8"]
    missing = validate(wf(doc), registry, partial_execution_targets=["77"])
    assert missing.error.type == "invalid_prompt" and "77" in missing.error.message


def test_errors_are_collected_per_node(registry: NodeRegistry) -> None:
    doc = chain(value=5000)
    doc["2"]["inputs"]["value"] = "x"
    result = validate(wf(doc), registry)
    assert {n: result.node_errors[n]["errors"][0]["type"] for n in result.node_errors} == {
        "1": "value_bigger_than_max",
        "2": "invalid_input_type",
    }
    assert result.to_dict()["ok"] is False
