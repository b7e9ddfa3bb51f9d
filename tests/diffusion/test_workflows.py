"""ComfyUI workflows on tiny checkpoints, offline on the CPU: text-to-image (SD1.5, SDXL,
every checkpoint format), LoRA, VAE override, img2img, the latent and image nodes, the
two-stage KSamplerAdvanced split, PNG metadata, and exact resume in a fresh process."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from midrun.debug.trace import StopAt
from midrun.engine.control import Position
from midrun.engine.executor import Executor, RunStatus
from midrun.engine.runstate import RunState
from midrun.graph.workflow import Workflow
from tests.diffusion.conftest import (
    FOLDER_CKPT,
    LORAS,
    PICKLE_CKPT,
    SD15_CKPT,
    SDXL_CKPT,
    VAE_FILE,
    txt2img,
)

ROOT = Path(__file__).resolve().parents[2]


def run(registry, prompt: dict, *hooks, extra_pnginfo: dict | None = None):
    from midrun.engine.workflow_plan import RunContext

    context = RunContext(extra_pnginfo=extra_pnginfo or {})
    result = asyncio.run(
        Executor(hooks=hooks).run(Workflow.from_api(prompt), registry, context=context)
    )
    return result


def image_of(result, node: str = "9") -> torch.Tensor:
    assert result.status == RunStatus.COMPLETED, result.error
    return result.plan.target_values()[node][0]


@pytest.mark.parametrize("ckpt", [SD15_CKPT, SDXL_CKPT, PICKLE_CKPT, FOLDER_CKPT])
def test_txt2img_writes_a_png_with_comfyui_metadata(diffusion_registry, runtime, ckpt) -> None:
    prompt = txt2img(ckpt)
    workflow_doc = {"nodes": [], "links": [], "version": 0.4}
    result = run(diffusion_registry, prompt, extra_pnginfo={"workflow": workflow_doc})
    images = image_of(result)
    assert images.shape == (1, 64, 64, 3)
    assert float(images.std()) > 0.01  # a picture, not a constant
    [entry] = result.plan.ui["9"]["images"]
    assert entry == {"filename": "midrun_00001_.png", "subfolder": "", "type": "output"}
    with Image.open(runtime.output_dir / entry["filename"]) as png:
        assert png.size == (64, 64)
        assert json.loads(png.text["prompt"]) == prompt
        assert json.loads(png.text["workflow"]) == workflow_doc
    again = run(diffusion_registry, prompt)
    assert torch.equal(image_of(again), images)  # same seed, same picture
    assert again.plan.ui["9"]["images"][0]["filename"] == "midrun_00002_.png"


def test_single_file_and_folder_give_the_same_image(diffusion_registry) -> None:
    single = image_of(run(diffusion_registry, txt2img(SD15_CKPT)))
    assert torch.equal(image_of(run(diffusion_registry, txt2img(FOLDER_CKPT))), single)
    assert torch.equal(image_of(run(diffusion_registry, txt2img(PICKLE_CKPT))), single)


def test_prompt_seed_and_cfg_change_the_image(diffusion_registry) -> None:
    base = image_of(run(diffusion_registry, txt2img()))
    for changed in (txt2img(text="a blue ring"), txt2img(seed=2), txt2img(cfg=3.0)):
        assert not torch.equal(image_of(run(diffusion_registry, changed)), base)


def with_lora(prompt: dict, lora: str, strength_model: float, strength_clip: float) -> dict:
    prompt = json.loads(json.dumps(prompt))
    prompt["10"] = {
        "class_type": "LoraLoader",
        "inputs": {
            "model": ["4", 0],
            "clip": ["4", 1],
            "lora_name": lora,
            "strength_model": strength_model,
            "strength_clip": strength_clip,
        },
    }
    prompt["3"]["inputs"]["model"] = ["10", 0]
    prompt["6"]["inputs"]["clip"] = ["10", 1]
    prompt["7"]["inputs"]["clip"] = ["10", 1]
    return prompt


def test_lora_in_three_key_styles(diffusion_registry, runtime) -> None:
    base = image_of(run(diffusion_registry, txt2img()))
    images = {
        style: image_of(run(diffusion_registry, with_lora(txt2img(), name, 1.0, 1.0)))
        for style, name in LORAS.items()
    }
    assert not torch.equal(images["kohya"], base)
    # The three files hold the same deltas under kohya, ComfyUI and diffusers names.
    assert torch.allclose(images["kohya"], images["comfy"], atol=1e-6)
    assert torch.allclose(images["kohya"], images["diffusers"], atol=1e-6)
    off = image_of(run(diffusion_registry, with_lora(txt2img(), LORAS["kohya"], 0.0, 0.0)))
    assert torch.equal(off, base)
    model_only = json.loads(json.dumps(txt2img()))
    model_only["10"] = {
        "class_type": "LoraLoaderModelOnly",
        "inputs": {"model": ["4", 0], "lora_name": LORAS["kohya"], "strength_model": 1.0},
    }
    model_only["3"]["inputs"]["model"] = ["10", 0]
    clip_side = image_of(run(diffusion_registry, with_lora(txt2img(), LORAS["kohya"], 0.0, 1.0)))
    only = image_of(run(diffusion_registry, model_only))
    assert not torch.equal(only, base) and not torch.equal(only, clip_side)
    assert runtime.cache.snapshot().misses == 1 + len(LORAS)  # one base, never reloaded


def test_vae_override(diffusion_registry) -> None:
    base = image_of(run(diffusion_registry, txt2img()))
    prompt = txt2img()
    prompt["11"] = {"class_type": "VAELoader", "inputs": {"vae_name": VAE_FILE}}
    prompt["8"]["inputs"]["vae"] = ["11", 0]
    other = image_of(run(diffusion_registry, prompt))
    assert other.shape == base.shape and not torch.equal(other, base)


def test_img2img_and_scaling_nodes(diffusion_registry, runtime) -> None:
    runtime.input_dir.mkdir(parents=True, exist_ok=True)
    gradient = torch.linspace(0, 1, 48)[None, :, None].expand(40, 48, 3)
    Image.fromarray((gradient.numpy() * 255).astype("uint8")).save(runtime.input_dir / "in.png")
    prompt = txt2img(denoise=0.5)
    prompt["12"] = {"class_type": "LoadImage", "inputs": {"image": "in.png"}}
    prompt["13"] = {
        "class_type": "ImageScale",
        "inputs": {"image": ["12", 0], "upscale_method": "lanczos", "width": 64, "height": 0,
                   "crop": "disabled"},
    }  # fmt: skip
    prompt["14"] = {"class_type": "VAEEncode", "inputs": {"pixels": ["13", 0], "vae": ["4", 2]}}
    prompt["15"] = {
        "class_type": "LatentUpscaleBy",
        "inputs": {"samples": ["14", 0], "upscale_method": "bislerp", "scale_by": 1.5},
    }
    prompt["16"] = {
        "class_type": "LatentUpscale",
        "inputs": {"samples": ["15", 0], "upscale_method": "bicubic", "width": 64, "height": 64,
                   "crop": "center"},
    }  # fmt: skip
    prompt["3"]["inputs"]["latent_image"] = ["16", 0]
    result = run(diffusion_registry, prompt)
    assert image_of(result).shape == (1, 64, 64, 3)
    assert not torch.equal(image_of(result), image_of(run(diffusion_registry, txt2img())))


def test_load_image_is_confined(diffusion_registry) -> None:
    prompt = {
        "1": {"class_type": "LoadImage", "inputs": {"image": "../../etc/passwd"}},
        "2": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}},
    }
    from midrun.engine.executor import WorkflowInvalidError

    with pytest.raises(WorkflowInvalidError):  # not one of the input folder's files
        run(diffusion_registry, prompt)


def test_conditioning_combine(diffusion_registry) -> None:
    prompt = txt2img()
    prompt["17"] = {"class_type": "CLIPTextEncode", "inputs": {"text": "blue", "clip": ["4", 1]}}
    prompt["18"] = {
        "class_type": "ConditioningCombine",
        "inputs": {"conditioning_1": ["6", 0], "conditioning_2": ["17", 0]},
    }
    prompt["3"]["inputs"]["positive"] = ["18", 0]
    combined = image_of(run(diffusion_registry, prompt))
    assert not torch.equal(combined, image_of(run(diffusion_registry, txt2img())))


def advanced(prompt: dict, node: str, start: int, end: int, noise: bool, leftover: bool,
             latent: list) -> None:  # fmt: skip
    prompt[node] = {
        "class_type": "KSamplerAdvanced",
        "inputs": {
            "model": ["4", 0],
            "add_noise": "enable" if noise else "disable",
            "noise_seed": 1,
            "steps": 8,
            "cfg": 7.0,
            "sampler_name": "euler",
            "scheduler": "karras",
            "positive": ["6", 0],
            "negative": ["7", 0],
            "latent_image": latent,
            "start_at_step": start,
            "end_at_step": end,
            "return_with_leftover_noise": "enable" if leftover else "disable",
        },
    }


def test_ksampler_advanced_two_stages_equal_one_run(diffusion_registry) -> None:
    """Steps 0-3 with leftover noise, then 3-8 without adding noise: the same as 0-8."""
    whole = txt2img(steps=8, scheduler="karras")
    one = image_of(run(diffusion_registry, whole))
    split = txt2img(steps=8, scheduler="karras")
    advanced(split, "20", 0, 3, True, True, ["5", 0])
    advanced(split, "21", 3, 10000, False, False, ["20", 0])
    split["8"]["inputs"]["samples"] = ["21", 0]
    del split["3"]
    assert torch.allclose(image_of(run(diffusion_registry, split)), one, atol=1e-5)
    same = txt2img(steps=8, scheduler="karras")
    advanced(same, "20", 0, 10000, True, False, ["5", 0])
    same["8"]["inputs"]["samples"] = ["20", 0]
    del same["3"]
    assert torch.equal(image_of(run(diffusion_registry, same)), one)


def test_denoise_zero_returns_the_input(diffusion_registry) -> None:
    prompt = txt2img(denoise=0.0)
    decoded_zero = image_of(run(diffusion_registry, prompt))
    plain = {k: v for k, v in prompt.items() if k != "3"}
    plain["8"]["inputs"]["samples"] = ["5", 0]
    assert torch.equal(decoded_zero, image_of(run(diffusion_registry, plain)))


RESUME_SCRIPT = """
import asyncio, json, sys, torch
from pathlib import Path
from midrun.diffusion.runtime import DiffusionRuntime
from midrun.engine.executor import Executor
from midrun.engine.runstate import RunState
from midrun.nodes import builtin_registry
from midrun.nodes.comfy_impl import attach
models, work = Path(sys.argv[1]), Path(sys.argv[2])
runtime = DiffusionRuntime.create(models, device="cpu", output_dir=work / "out")
registry = attach(builtin_registry(models), runtime)
for state_dir in sorted(work.glob("state-*")):
    result = asyncio.run(Executor().resume(RunState.load(state_dir), registry))
    assert result.ok, result.error
    torch.save(result.plan.target_values()["9"][0], work / (state_dir.name + ".pt"))
"""


def test_exact_resume_through_the_executor_in_a_fresh_process(
    diffusion_registry, models, tmp_path: Path
) -> None:
    """Suspended before the sampler, after its first step, mid-way and before its last
    step, for a deterministic, a multistep, an ancestral and an SDE sampler: a new
    process resumes each and decodes a bit-identical image."""
    cases = {}
    for sampler in ("euler", "dpmpp_2m", "euler_ancestral", "dpmpp_sde", "uni_pc"):
        prompt = txt2img(SDXL_CKPT if sampler == "dpmpp_sde" else SD15_CKPT, sampler=sampler,
                         steps=6, scheduler="karras")  # fmt: skip
        whole = image_of(run(diffusion_registry, prompt))
        for k in (0, 1, 3, 5):
            hook = StopAt("3", Position.BEFORE) if k == 0 else StopAt("3", Position.STEP, k)
            result = run(diffusion_registry, prompt, hook)
            assert result.status == RunStatus.SUSPENDED
            name = f"state-{sampler}-{k}"
            result.state.save(tmp_path / name)
            cases[name] = whole
    subprocess.run(
        [sys.executable, "-c", RESUME_SCRIPT, str(models.models_dir), str(tmp_path)],
        check=True,
        cwd=ROOT,
        timeout=600,
    )
    for name, whole in cases.items():
        resumed = torch.load(tmp_path / f"{name}.pt")
        assert torch.equal(resumed, whole), name


def test_resume_applies_an_edited_cfg_from_the_next_step(diffusion_registry) -> None:
    prompt = txt2img(steps=6)
    paused = run(diffusion_registry, prompt, StopAt("3", Position.STEP, 3))
    state: RunState = paused.state
    state.workflow_checkpoint().workflow["3"]["inputs"]["cfg"] = 2.0
    resumed = asyncio.run(Executor().resume(state, diffusion_registry))
    edited = image_of(resumed)
    assert not torch.equal(edited, image_of(run(diffusion_registry, prompt)))
    assert not torch.equal(edited, image_of(run(diffusion_registry, txt2img(steps=6, cfg=2.0))))


def test_resume_refuses_an_edit_that_is_not_hot_swappable(diffusion_registry) -> None:
    paused = run(diffusion_registry, txt2img(steps=6), StopAt("3", Position.STEP, 2))
    state: RunState = paused.state
    state.workflow_checkpoint().workflow["3"]["inputs"]["sampler_name"] = "heun"
    resumed = asyncio.run(Executor().resume(state, diffusion_registry))
    assert resumed.status == RunStatus.FAILED
    assert resumed.error.type == "input_not_hot_swappable"
    assert resumed.error.extra_info["input_name"] == "sampler_name"
    assert "sampler_name" in resumed.error.message


def test_prompt_edit_on_a_paused_run_acts_from_the_next_step(diffusion_registry, runtime) -> None:
    """The text of a finished CLIPTextEncode is edited while the sampler is paused at
    step 3: the encoder runs again and the sampler takes the new conditioning from step 4,
    exactly as an in-process swap at step 3 would."""
    from midrun.diffusion.ksampler import KSamplerStep
    from midrun.engine.edits import edit_suspended
    from midrun.nodes.comfy_impl import implementations

    paused = run(diffusion_registry, txt2img(steps=6), StopAt("3", Position.STEP, 3))
    edited = edit_suspended(paused.state, "6", "text", "a blue ring", diffusion_registry)
    resumed = asyncio.run(Executor().resume(edited, diffusion_registry))
    image = image_of(resumed)

    nodes = implementations(runtime)
    model, clip, vae = nodes["CheckpointLoaderSimple"](SD15_CKPT)
    node = KSamplerStep()
    inputs = {
        "model": model, "seed": 1, "steps": 6, "cfg": 7.0, "sampler_name": "euler",
        "scheduler": "normal", "positive": clip.encode("a red star on a white background"),
        "negative": clip.encode(""), "latent_image": nodes["EmptyLatentImage"](64, 64, 1)[0],
        "denoise": 1.0,
    }  # fmt: skip
    state = node.start(inputs)
    for _ in range(3):
        state = node.step(state)
    state = node.swap(state, {"positive": clip.encode("a blue ring")})
    while not node.done(state):
        state = node.step(state)
    expected = nodes["VAEDecode"](node.finish(state)[0], vae)[0]
    assert torch.equal(image, expected)
    assert not torch.equal(image, image_of(run(diffusion_registry, txt2img(steps=6))))


def test_editing_the_latent_size_of_a_paused_sampler_is_refused(diffusion_registry) -> None:
    from midrun.core.errors import InputNotHotSwappable
    from midrun.engine.edits import edit_suspended

    paused = run(diffusion_registry, txt2img(steps=6), StopAt("3", Position.STEP, 2))
    with pytest.raises(InputNotHotSwappable) as refused:
        edit_suspended(paused.state, "5", "width", 128, diffusion_registry)
    assert refused.value.extra_info["input_name"] == "latent_image"
    # The sampler's own check stands behind the edit-time one: a state edited by hand
    # still fails on resume, naming the input.
    saved = paused.state.workflow_checkpoint()
    plan = dataclasses.replace(saved, values={**saved.values, "5": None})
    plan.workflow = {**plan.workflow, "5": {**plan.workflow["5"]}}
    plan.workflow["5"]["inputs"] = {**plan.workflow["5"]["inputs"], "width": 128}
    edited = type(paused.state)(paused.state.kind, paused.state.run_id, plan,
                                paused.state.blobs)  # fmt: skip
    result = asyncio.run(Executor().resume(edited, diffusion_registry))
    assert result.status == RunStatus.FAILED
    assert result.error.extra_info["input_name"] == "latent_image"
