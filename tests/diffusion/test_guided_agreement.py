"""The samplers agree with k-diffusion on the real denoiser wrapper: CFG over a (tiny)
SD1.5 UNet, with the KSampler node's own sigmas and starting latent."""

from __future__ import annotations

import pytest
import torch

from midrun.diffusion.guidance import Guidance
from midrun.diffusion.ksampler import KSamplerStep
from midrun.diffusion.samplers import SAMPLERS
from midrun.nodes.comfy_impl import implementations
from tests.diffusion.conftest import SD15_CKPT
from tests.diffusion.reference import load_k_diffusion_sampling
from tests.diffusion.test_samplers import K_NAMES, SEED, MatchingNoise


@pytest.fixture(scope="module")
def setup(models):
    from midrun.diffusion.runtime import DiffusionRuntime

    runtime = DiffusionRuntime.create(models.models_dir, device="cpu")
    nodes = implementations(runtime)
    model, clip, _ = nodes["CheckpointLoaderSimple"](SD15_CKPT)
    return {
        "model": model,
        "seed": SEED,
        "steps": 8,
        "cfg": 5.0,
        "scheduler": "karras",
        "positive": clip.encode("a red star"),
        "negative": clip.encode("blurry"),
        "latent_image": nodes["EmptyLatentImage"](64, 64, 2)[0],
        "denoise": 1.0,
    }


@pytest.mark.parametrize("sampler", sorted(K_NAMES))
def test_ksampler_agrees_with_k_diffusion_on_the_cfg_denoiser(setup, sampler) -> None:
    k = load_k_diffusion_sampling()
    node = KSamplerStep()
    inputs = {**setup, "sampler_name": sampler}
    state = node.start(inputs)
    sigmas = state["sampler"]["sigmas"]
    x = state["sampler"]["x"].clone()
    while not node.done(state):
        state = node.step(state)
    guide = Guidance(inputs["model"], inputs["positive"], inputs["negative"], 5.0, (64, 64))
    kwargs: dict = {"disable": True}
    if SAMPLERS[sampler].stochastic:
        kwargs["noise_sampler"] = MatchingNoise(sigmas, x)
    theirs = getattr(k, f"sample_{K_NAMES[sampler]}")(guide, x, sigmas.clone(), **kwargs)
    ours = state["sampler"]["x"]
    # A random-weight UNet under cfg 5 drives latents to magnitudes of ~40, so agreement
    # is to 1e-5 of the latent's scale (float32 rounding of a different operation order).
    scale = max(1.0, float(theirs.abs().max()))
    assert torch.allclose(ours, theirs, atol=1e-5 * scale, rtol=0), (ours - theirs).abs().max()
