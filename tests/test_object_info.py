"""Node declarations export in ComfyUI's ``/object_info`` shape."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from midrun.core.errors import NodeDefinitionError
from midrun.graph.registry import NodeRegistry
from midrun.graph.types import COMBO, INT, InputSpec, NodeType, OutputSpec
from midrun.nodes import builtin_registry

ENTRY_KEYS = {
    "input",
    "input_order",
    "output",
    "output_is_list",
    "output_name",
    "name",
    "display_name",
    "description",
    "python_module",
    "category",
    "output_node",
}


def test_ksampler_entry_matches_comfyui(tmp_path: Path) -> None:
    info = builtin_registry(models_dir=tmp_path).object_info()
    entry = info["KSampler"]
    assert set(entry) >= ENTRY_KEYS
    assert entry["input_order"] == {
        "required": [
            "model",
            "seed",
            "steps",
            "cfg",
            "sampler_name",
            "scheduler",
            "positive",
            "negative",
            "latent_image",
            "denoise",
        ]
    }
    required = entry["input"]["required"]
    assert required["model"] == ["MODEL", {"tooltip": required["model"][1]["tooltip"]}]
    # what may change between steps (not the sampler or scheduler), under midrun's own key
    assert entry["midrun"] == {"hot_inputs": ["model", "seed", "steps", "cfg", "positive",
                                              "negative", "denoise"]}
    assert not any("hot_swappable" in str(spec) for spec in required.values())
    seed = required["seed"][1]
    assert (seed["default"], seed["min"], seed["max"]) == (0, 0, 0xFFFFFFFFFFFFFFFF)
    assert seed["control_after_generate"] is True
    steps = required["steps"][1]
    assert (steps["default"], steps["min"], steps["max"]) == (20, 1, 10000)
    cfg = required["cfg"][1]
    assert (cfg["default"], cfg["min"], cfg["max"], cfg["step"], cfg["round"]) == (
        8.0,
        0.0,
        100.0,
        0.1,
        0.01,
    )
    assert required["sampler_name"][0][:3] == ["euler", "euler_ancestral", "heun"]
    assert "karras" in required["scheduler"][0]
    assert entry["output"] == ["LATENT"] and entry["output_is_list"] == [False]
    assert entry["output_node"] is False and entry["category"] == "sampling"
    json.dumps(info)  # serialisable as is


def test_hidden_inputs_and_output_nodes(tmp_path: Path) -> None:
    entry = builtin_registry(models_dir=tmp_path).object_info()["SaveImage"]
    assert entry["input"]["hidden"] == {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"}
    assert entry["input_order"]["hidden"] == ["prompt", "extra_pnginfo"]
    assert entry["output_node"] is True


def test_file_choices_come_from_the_models_directory(tmp_path: Path) -> None:
    (tmp_path / "checkpoints" / "sd15").mkdir(parents=True)
    (tmp_path / "checkpoints" / "sd15" / "b.safetensors").write_bytes(b"")
    (tmp_path / "checkpoints" / "a.ckpt").write_bytes(b"")
    (tmp_path / "checkpoints" / "notes.txt").write_text("not a model")
    info = builtin_registry(models_dir=tmp_path).object_info()
    # The folder's models, then the shipped demo model.
    assert info["CheckpointLoaderSimple"]["input"]["required"]["ckpt_name"][0] == [
        "a.ckpt",
        "sd15/b.safetensors",
        "midrun-demo",
    ]
    assert info["LoraLoader"]["input"]["required"]["lora_name"][0] == []


def test_every_builtin_entry_is_well_formed(tmp_path: Path) -> None:
    info = builtin_registry(models_dir=tmp_path).object_info()
    assert {
        "KSampler",
        "KSamplerAdvanced",
        "CLIPTextEncode",
        "LoadImage",
        "LifeSimulate",
        "PrimitiveInt",
    } <= set(info)
    for name, entry in info.items():
        assert set(entry) >= ENTRY_KEYS, name
        assert entry["name"] == name
        assert len(entry["output"]) == len(entry["output_is_list"]) == len(entry["output_name"])
        for section, names in entry["input_order"].items():
            assert list(entry["input"][section]) == names, name


def test_optional_inputs_and_list_outputs_are_exported() -> None:
    registry = NodeRegistry(
        [
            NodeType(
                "Split",
                (
                    InputSpec("n", INT, default=2, min=1, max=8),
                    InputSpec("mode", COMBO, choices=("a", "b"), section="optional", default="a"),
                ),
                (OutputSpec(INT, "parts", is_list=True),),
                lambda n, mode="a": ([1] * n,),
            )
        ]
    )
    entry = registry.object_info_entry(registry["Split"])
    assert entry["input"]["optional"] == {"mode": [["a", "b"], {"default": "a"}]}
    assert entry["output_is_list"] == [True] and entry["output_name"] == ["parts"]


def test_inconsistent_declarations_are_refused() -> None:
    with pytest.raises(NodeDefinitionError, match="twice"):
        NodeType("X", (InputSpec("a", INT), InputSpec("a", INT)))
    with pytest.raises(NodeDefinitionError, match="choices"):
        NodeType("X", (InputSpec("a", COMBO),))
    with pytest.raises(NodeDefinitionError, match="hidden"):
        NodeType("X", (InputSpec("a", "SECRET", section="hidden"),))
    registry = NodeRegistry([NodeType("X")])
    with pytest.raises(NodeDefinitionError, match="already"):
        registry.register(NodeType("X"))
