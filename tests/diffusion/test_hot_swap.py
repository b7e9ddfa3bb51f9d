"""Hot-swappable sampler inputs: steps before an edit are untouched, the edit acts from the
next step, a saved state resumes with new inputs, and anything else is refused by name."""

from __future__ import annotations

import pytest
import torch

from midrun.core.errors import InputNotHotSwappable
from midrun.diffusion import samplers
from midrun.diffusion.guidance import Guidance
from midrun.diffusion.ksampler import KSamplerStep
from midrun.engine.codec import Decoder, Encoder, Live
from midrun.nodes.comfy_impl import implementations
from tests.diffusion.conftest import LORAS, SD15_CKPT, SDXL_CKPT

STEPS = 6
EDIT_AT = 3


@pytest.fixture
def nodes(runtime):
    return implementations(runtime)


@pytest.fixture
def inputs(nodes) -> dict:
    model, clip, _ = nodes["CheckpointLoaderSimple"](SD15_CKPT)
    return {
        "model": model,
        "seed": 5,
        "steps": STEPS,
        "cfg": 6.0,
        "sampler_name": "euler",
        "scheduler": "karras",
        "positive": clip.encode("a red star")[0:1],
        "negative": clip.encode("")[0:1],
        "latent_image": nodes["EmptyLatentImage"](64, 64, 1)[0],
        "denoise": 1.0,
    }


def trajectory(node: KSamplerStep, inputs: dict, changes: dict | None = None) -> list:
    state = node.start(inputs)
    xs = []
    while not node.done(state):
        if changes is not None and len(xs) == EDIT_AT:
            state = node.swap(state, changes)
        state = node.step(state)
        xs.append(state["sampler"]["x"].clone())
    return xs


def assert_edit_acts_after(base: list, edited: list) -> None:
    for i in range(EDIT_AT):
        assert torch.equal(base[i], edited[i]), f"step {i + 1} changed before the edit"
    assert not torch.equal(base[EDIT_AT], edited[EDIT_AT]), "the edit had no effect"


def test_cfg_edit_is_exactly_one_guided_step_later(inputs) -> None:
    node = KSamplerStep()
    base = trajectory(node, inputs)
    edited = trajectory(node, inputs, {"cfg": 2.5})
    assert_edit_acts_after(base, edited)
    # The step after the edit is an euler step with the new guidance scale.
    model = inputs["model"]
    state = node.start(inputs)
    for _ in range(EDIT_AT):
        state = node.step(state)
    guide = Guidance(model, inputs["positive"], inputs["negative"], 2.5, (64, 64))
    manual = samplers.sample_step(samplers.SamplerState.from_dict(state["sampler"]), guide)
    assert torch.equal(manual.x, edited[EDIT_AT])


@pytest.mark.parametrize("name", ["positive", "negative"])
def test_conditioning_edit(inputs, nodes, name) -> None:
    _, clip, _ = nodes["CheckpointLoaderSimple"](SD15_CKPT)
    node = KSamplerStep()
    edited = trajectory(node, inputs, {name: clip.encode("a blue ring")})
    assert_edit_acts_after(trajectory(node, inputs), edited)


def test_seed_edit_changes_noise_from_the_next_step(inputs) -> None:
    inputs = {**inputs, "sampler_name": "euler_ancestral"}
    node = KSamplerStep()
    assert_edit_acts_after(trajectory(node, inputs), trajectory(node, inputs, {"seed": 99}))
    # A deterministic sampler draws no noise after the first, so a seed edit is a no-op.
    det = {**inputs, "sampler_name": "euler"}
    assert torch.equal(trajectory(node, det)[-1], trajectory(node, det, {"seed": 99})[-1])


def test_lora_strength_edit_without_reload(inputs, runtime) -> None:
    lora = runtime.lora(LORAS["kohya"])
    inputs = {**inputs, "model": inputs["model"].with_lora(lora, 0.2)}
    misses = runtime.cache.snapshot().misses
    node = KSamplerStep()
    stronger = inputs["model"].base
    edited = trajectory(node, inputs, {"model": type(inputs["model"])(stronger, ((lora, 1.0),))})
    assert_edit_acts_after(trajectory(node, inputs), edited)
    assert runtime.cache.snapshot().misses == misses


@pytest.mark.parametrize("change", [{"steps": 10}, {"steps": 4}, {"denoise": 0.6}])
def test_schedule_edits_replan_from_the_current_sigma(inputs, change) -> None:
    node = KSamplerStep()
    base_state = node.start(inputs)
    state = base_state
    for _ in range(EDIT_AT):
        state = node.step(state)
    old = state["sampler"]["sigmas"]
    current = float(old[EDIT_AT])
    swapped = node.swap(state, change)
    new = swapped["sampler"]["sigmas"]
    assert torch.equal(new[: EDIT_AT + 1], old[: EDIT_AT + 1])  # the walked part stays
    assert (new[EDIT_AT + 1 :] < current).all()
    params = {**node._params(inputs), **change}
    planned = node._sigmas(inputs["model"], params)
    assert torch.equal(new[EDIT_AT + 1 :], planned[planned < current * (1 - 1e-5)])
    assert node.total_steps(swapped) == EDIT_AT + len(new) - EDIT_AT - 1
    edited = trajectory(node, inputs, change)
    assert_edit_acts_after(trajectory(node, inputs), edited)
    assert len(edited) == node.total_steps(swapped)


def test_advanced_end_at_step_is_hot(inputs) -> None:
    node = KSamplerStep(advanced=True)
    adv = {
        **{k: v for k, v in inputs.items() if k not in ("seed", "denoise")},
        "noise_seed": 5,
        "add_noise": "enable",
        "start_at_step": 0,
        "end_at_step": 10000,
        "return_with_leftover_noise": "disable",
    }
    edited = trajectory(node, adv, {"end_at_step": 4})
    assert len(edited) == 4
    with pytest.raises(InputNotHotSwappable, match="start_at_step"):
        node.swap(node.start(adv), {**adv, "start_at_step": 2})


@pytest.mark.parametrize(
    ("name", "value"),
    [("sampler_name", "heun"), ("scheduler", "normal")],
)
def test_other_inputs_are_refused_by_name(inputs, name, value) -> None:
    node = KSamplerStep()
    state = node.step(node.start(inputs))
    with pytest.raises(InputNotHotSwappable) as caught:
        node.swap(state, {**inputs, name: value})
    assert caught.value.extra_info["input_name"] == name
    assert name in caught.value.message
    node.swap(state, dict(inputs))  # the same values are not an edit


def test_latent_and_family_changes_are_refused(inputs, nodes) -> None:
    node = KSamplerStep()
    state = node.start(inputs)
    bigger = nodes["EmptyLatentImage"](128, 64, 1)[0]
    with pytest.raises(InputNotHotSwappable, match="latent_image"):
        node.swap(state, {"latent_image": bigger})
    xl, _, _ = nodes["CheckpointLoaderSimple"](SDXL_CKPT)
    with pytest.raises(InputNotHotSwappable, match=r"'model'.*sdxl"):
        node.swap(state, {"model": xl})


def test_saved_state_resumes_with_edits(inputs) -> None:
    """A state encoded to bytes (as a pause writes it) has no model; resume binds the new
    inputs and continues exactly as an in-process swap would."""
    node = KSamplerStep()
    state = node.start(inputs)
    for _ in range(EDIT_AT):
        state = node.step(state)
    encoder = Encoder()
    saved = encoder.encode(state)
    restored = Decoder(encoder.blobs).decode(saved)
    assert restored["model"] == Live()
    with pytest.raises(RuntimeError, match="resume"):
        node.step(restored)
    edited_inputs = {**inputs, "cfg": 3.0, "steps": 8}
    resumed = node.resume(restored, edited_inputs)
    in_process = node.swap(state, {"cfg": 3.0, "steps": 8})
    while not node.done(resumed):
        resumed, in_process = node.step(resumed), node.step(in_process)
    assert torch.equal(resumed["sampler"]["x"], in_process["sampler"]["x"])
    assert torch.equal(node.finish(resumed)[0]["samples"], node.finish(in_process)[0]["samples"])
