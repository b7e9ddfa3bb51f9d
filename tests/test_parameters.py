"""Parameters: extraction, application with specific errors, and batch variations."""

from __future__ import annotations

import pytest

from midrun.core.errors import ParameterError
from midrun.graph.parameters import apply_parameters, extract_parameters
from midrun.graph.registry import NodeRegistry
from midrun.graph.validation import validate
from midrun.graph.variations import (
    CycleVariation,
    SeedVariation,
    SweepVariation,
    batch_size,
    expand_batch,
)
from midrun.graph.workflow import Workflow
from midrun.nodes import builtin_registry


def workflow() -> Workflow:
    return Workflow.from_api(
        {
            "1": {"class_type": "Const", "inputs": {"value": 4}, "_meta": {"title": "Base"}},
            "2": {"class_type": "Scale", "inputs": {"x": ["1", 0], "factor": 2.0, "mode": "mul"}},
            "3": {"class_type": "CountSteps", "inputs": {"start": ["1", 0], "steps": 5}},
            "9": {"class_type": "Output", "inputs": {"value": ["2", 0], "label": "scaled"}},
        }
    )


def by_key(params):
    return {f"{p['node_id']}.{p['field']}": p for p in params}


def test_extract_lists_every_literal_widget(registry: NodeRegistry) -> None:
    params = by_key(extract_parameters(workflow(), registry))
    assert set(params) == {"1.value", "2.factor", "2.mode", "3.steps", "9.label"}
    assert params["1.value"] == {
        "node_id": "1",
        "field": "value",
        "label": "Base / value",
        "type": "number",
        "value": 4,
        "class_type": "Const",
        "min": -1000,
        "max": 1000,
    }
    assert params["2.mode"]["type"] == "select" and params["2.mode"]["options"] == ["mul", "div"]
    assert params["2.factor"]["step"] == 0.5
    assert params["3.steps"]["hot"] is True
    assert params["9.label"]["type"] == "string"


def test_apply_round_trip(registry: NodeRegistry) -> None:
    original = workflow()
    params = extract_parameters(original, registry)
    same = apply_parameters(
        original,
        registry,
        [{"node_id": p["node_id"], "field": p["field"], "value": p["value"]} for p in params],
    )
    assert same.to_api() == original.to_api()
    changed = apply_parameters(original, registry, {"1.value": "9", "2.mode": "div"})
    assert changed["1"].inputs["value"] == 9 and changed["2"].inputs["mode"] == "div"
    assert original["1"].inputs["value"] == 4  # untouched
    assert by_key(extract_parameters(changed, registry))["1.value"]["value"] == 9
    assert validate(changed, registry).ok


@pytest.mark.parametrize(
    ("edit", "kind"),
    [
        ({"77.value": 1}, "unknown_node"),
        ({"1.nope": 1}, "unknown_field"),
        ({"2.x": 1.0}, "unknown_field"),  # force_input: not a widget
        ({"1.value": 5000}, "value_bigger_than_max"),
        ({"1.value": -5000}, "value_smaller_than_min"),
        ({"1.value": "many"}, "invalid_input_type"),
        ({"2.mode": "pow"}, "value_not_in_list"),
        ({"value": 3}, "invalid_parameter"),
    ],
)
def test_apply_refuses_with_specific_errors(registry: NodeRegistry, edit, kind) -> None:
    with pytest.raises(ParameterError) as info:
        apply_parameters(workflow(), registry, edit)
    assert info.value.type == kind
    assert info.value.message


def test_linked_field_cannot_be_set(registry: NodeRegistry) -> None:
    linked = workflow()
    linked["9"].inputs["label"] = ["1", 0]
    with pytest.raises(ParameterError) as info:
        apply_parameters(linked, registry, {"9.label": "x"}, check=False)
    assert info.value.type == "field_is_linked"


def comfy_workflow() -> Workflow:
    return Workflow.from_api(
        {
            "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "a.safetensors"}},
            "5": {
                "class_type": "EmptyLatentImage",
                "inputs": {"width": 512, "height": 512, "batch_size": 1},
            },
            "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a cat", "clip": ["10", 1]}},
            "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry", "clip": ["10", 1]}},
            "10": {
                "class_type": "LoraLoader",
                "inputs": {
                    "model": ["4", 0],
                    "clip": ["4", 1],
                    "lora_name": "l.safetensors",
                    "strength_model": 1.0,
                    "strength_clip": 1.0,
                },
            },
            "3": {
                "class_type": "KSampler",
                "inputs": {
                    "seed": 8,
                    "steps": 20,
                    "cfg": 7.0,
                    "sampler_name": "euler",
                    "scheduler": "normal",
                    "denoise": 1.0,
                    "model": ["10", 0],
                    "positive": ["6", 0],
                    "negative": ["7", 0],
                    "latent_image": ["5", 0],
                },
            },
            "11": {
                "class_type": "KSamplerAdvanced",
                "inputs": {
                    "add_noise": "enable",
                    "noise_seed": 1,
                    "steps": 20,
                    "cfg": 8.0,
                    "sampler_name": "euler",
                    "scheduler": "karras",
                    "start_at_step": 0,
                    "end_at_step": 10000,
                    "return_with_leftover_noise": "disable",
                    "model": ["10", 0],
                    "positive": ["6", 0],
                    "negative": ["7", 0],
                    "latent_image": ["3", 0],
                },
            },
            "8": {"class_type": "VAEDecode", "inputs": {"samples": ["11", 0], "vae": ["4", 2]}},
            "9": {
                "class_type": "SaveImage",
                "inputs": {"images": ["8", 0], "filename_prefix": "midrun"},
            },
        }
    )


def test_comfy_core_parameters_have_the_expected_kinds(tmp_path) -> None:
    for folder, name in (("checkpoints", "a.safetensors"), ("loras", "l.safetensors")):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / name).write_bytes(b"")
    registry = builtin_registry(models_dir=tmp_path)
    wf = comfy_workflow()
    assert validate(wf, registry).ok
    params = by_key(extract_parameters(wf, registry))
    expected = {
        "6.text": "string",
        "7.text": "string",
        "3.seed": "seed",
        "3.steps": "number",
        "3.cfg": "number",
        "3.sampler_name": "select",
        "3.scheduler": "select",
        "3.denoise": "number",
        "11.noise_seed": "seed",
        "11.steps": "number",
        "11.cfg": "number",
        "11.sampler_name": "select",
        "11.scheduler": "select",
        "11.start_at_step": "number",
        "11.end_at_step": "number",
        "5.width": "number",
        "5.height": "number",
        "5.batch_size": "number",
        "4.ckpt_name": "select",
        "10.lora_name": "select",
        "10.strength_model": "number",
        "10.strength_clip": "number",
    }
    for key, kind in expected.items():
        assert params[key]["type"] == kind, key
    assert params["4.ckpt_name"]["options"] == ["a.safetensors", "midrun-demo"]
    assert "euler" in params["3.sampler_name"]["options"]
    changed = apply_parameters(wf, registry, {"3.cfg": 4.5, "6.text": "a dog", "3.seed": 2**63})
    assert changed["3"].inputs["cfg"] == 4.5 and changed["6"].inputs["text"] == "a dog"
    with pytest.raises(ParameterError) as info:
        apply_parameters(wf, registry, {"3.sampler_name": "dpm_fast_made_up"})
    assert info.value.type == "value_not_in_list"
    with pytest.raises(ParameterError) as info:
        apply_parameters(wf, registry, {"3.denoise": 1.5})
    assert info.value.type == "value_bigger_than_max"


def test_seed_variations() -> None:
    inc = SeedVariation("3", "seed", "increment", start=10)
    assert [inc.value(i) for i in range(3)] == [10, 11, 12]
    assert SeedVariation("3", "seed", "increment", start=2**64 - 1).value(1) == 0
    fixed = SeedVariation("3", "seed", "fixed", start=5)
    assert {fixed.value(i) for i in range(4)} == {5}
    rnd = SeedVariation("3", "seed", "random", batch_seed=1)
    values = [rnd.value(i) for i in range(50)]
    assert len(set(values)) == 50 and all(0 <= v < 2**64 for v in values)
    assert values == [
        SeedVariation("3", "seed", "random", batch_seed=1).value(i) for i in range(50)
    ]
    assert values != [
        SeedVariation("3", "seed", "random", batch_seed=2).value(i) for i in range(50)
    ]


def test_cycles_and_sweeps() -> None:
    cycle = CycleVariation("6", "text", ("a cat", "a dog"))
    assert [cycle.value(i) for i in range(5)] == ["a cat", "a dog", "a cat", "a dog", "a cat"]
    sweep = SweepVariation("3", "cfg", 4.0, 6.0, 0.5)
    assert sweep.points() == [4.0, 4.5, 5.0, 5.5, 6.0]
    assert SweepVariation("3", "steps", 10, 30, 10).points() == [10, 20, 30]
    assert SweepVariation("3", "cfg", 0.1, 0.3, 0.1).points() == [0.1, 0.2, 0.3]
    assert batch_size([cycle, sweep, SeedVariation("3", "seed")]) == 5
    with pytest.raises(ParameterError):
        SweepVariation("3", "cfg", 4.0, 2.0, 0.5)
    with pytest.raises(ParameterError):
        CycleVariation("6", "text", ())


def test_expand_batch_makes_valid_workflows(registry: NodeRegistry) -> None:
    jobs = expand_batch(
        workflow(),
        registry,
        [
            SweepVariation("1", "value", 1, 3, 1),
            CycleVariation("2", "mode", ("mul", "div")),
        ],
    )
    assert [used for _, used in jobs] == [
        {"1.value": 1, "2.mode": "mul"},
        {"1.value": 2, "2.mode": "div"},
        {"1.value": 3, "2.mode": "mul"},
    ]
    assert all(validate(wf, registry).ok for wf, _ in jobs)
    with pytest.raises(ParameterError) as info:
        expand_batch(workflow(), registry, [SweepVariation("1", "value", 990, 1010, 10)])
    assert info.value.type == "value_bigger_than_max"
