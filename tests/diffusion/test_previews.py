"""Previews of the denoised estimate: methods, intervals, step tags, image bytes; and the
bytes a pause frees."""

from __future__ import annotations

import asyncio
import dataclasses
import io
import threading

import pytest
import torch
from PIL import Image

from midrun.debug.trace import StopAt
from midrun.diffusion import testing
from midrun.diffusion.families import SD15, SDXL
from midrun.diffusion.memory import tensor_bytes
from midrun.diffusion.previews import (
    Preview,
    PreviewDecoder,
    PreviewHook,
    PreviewSettings,
    latent_to_rgb,
)
from midrun.engine.control import Position
from midrun.engine.executor import Executor, RunStatus
from midrun.graph.workflow import Workflow
from tests.diffusion.conftest import SDXL_CKPT, txt2img


def run_with_previews(registry, runtime, settings, prompt=None):
    got: list[Preview] = []
    hook = PreviewHook(got.append, settings, runtime)
    result = asyncio.run(
        Executor(hooks=[hook]).run(Workflow.from_api(prompt or txt2img(steps=6)), registry)
    )
    hook.close()
    assert result.status == RunStatus.COMPLETED, result.error
    return got


@pytest.mark.parametrize(("method", "size"), [("latent2rgb", 8), ("vae", 64), ("auto", 64)])
def test_preview_methods(diffusion_registry, runtime, method, size) -> None:
    previews = run_with_previews(
        diffusion_registry, runtime, PreviewSettings(method=method, every_steps=2)
    )
    # The worker keeps only the newest waiting request, so a slow decoder may skip one;
    # the ones delivered are in order and tagged with their step.
    steps = [p.step for p in previews]
    assert steps and steps == sorted(steps) and set(steps) <= {2, 4, 6}
    for p in previews:
        assert p.node_id == "3" and p.total_steps == 6 and p.mime == "image/jpeg"
        with Image.open(io.BytesIO(p.data)) as image:
            assert image.format == "JPEG" and image.size == (size, size)
        # auto: the test checkpoint's VAE is as small as a TAESD, so it decodes previews
        assert p.method == ("vae" if method == "auto" else method)


def test_auto_previews_a_large_vaes_latents_with_latent2rgb(
        diffusion_registry, runtime, monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    from midrun.diffusion import previews as module

    monkeypatch.setattr(module, "SMALL_VAE_PARAMETERS", 1000)  # every VAE is "large"
    previews = run_with_previews(
        diffusion_registry, runtime, PreviewSettings(method="auto", every_steps=3)
    )
    assert previews and {p.method for p in previews} == {"latent2rgb"}
    with Image.open(io.BytesIO(previews[-1].data)) as image:
        assert image.size == (8, 8)


def test_a_model_without_a_vae_previews_with_latent2rgb(
        diffusion_registry, runtime, monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    # A UNet-only model (its VAE loaded apart, or none): "auto" has no VAE of the job's own
    # to decode with. The hook used to fail the run on it.
    load = runtime.checkpoint

    def unet_only(name: str):  # type: ignore[no-untyped-def]
        base = load(name)
        return dataclasses.replace(base, components=dataclasses.replace(base.components,
                                                                        vae=None))  # fmt: skip

    monkeypatch.setattr(runtime, "checkpoint", unet_only)
    got: list[Preview] = []
    hook = PreviewHook(got.append, PreviewSettings(method="auto", every_steps=1), runtime)
    stop = StopAt("3", Position.STEP, 4)  # before VAEDecode, which would need the VAE
    result = asyncio.run(Executor(hooks=[hook, stop]).run(
        Workflow.from_api(txt2img(steps=6)), diffusion_registry))  # fmt: skip
    hook.close()
    assert result.status == RunStatus.SUSPENDED, result.error
    assert got and {p.method for p in got} == {"latent2rgb"}
    assert max(p.step for p in got) <= 4


def test_taesd_when_present_and_webp(diffusion_registry, runtime) -> None:
    folder = runtime.paths.folders["vae_approx"][0] / "taesd"
    testing.write_taesd(folder)
    try:
        previews = run_with_previews(
            diffusion_registry, runtime, PreviewSettings(method="auto", format="WEBP")
        )
    finally:
        import shutil

        shutil.rmtree(folder)
    assert previews and all(p.method == "taesd" for p in previews)
    with Image.open(io.BytesIO(previews[-1].data)) as image:
        assert image.format == "WEBP" and image.size == (64, 64)


def test_none_and_time_interval(diffusion_registry, runtime) -> None:
    assert run_with_previews(diffusion_registry, runtime, PreviewSettings(method="none")) == []
    slow = run_with_previews(
        diffusion_registry, runtime, PreviewSettings(method="latent2rgb", every_ms=60_000)
    )
    assert [p.step for p in slow] == [1]  # the first, then nothing within a minute


def test_latent2rgb_factors() -> None:
    latent = torch.zeros(1, 4, 2, 2)
    latent[0, 0] = 1.0
    rgb = latent_to_rgb(latent, SD15)
    expected = (torch.tensor(SD15.latent_rgb_factors[0]) + 1) / 2
    assert torch.allclose(rgb[0, 0, 0], expected)
    assert torch.allclose(latent_to_rgb(torch.zeros(1, 4, 1, 1), SDXL)[0, 0, 0],
                          (torch.tensor(SDXL.latent_rgb_bias) + 1) / 2)  # fmt: skip
    assert PreviewDecoder().resolve("taesd", SD15) == "latent2rgb"  # none installed


def test_decoding_does_not_block_steps(diffusion_registry, runtime) -> None:
    """A decoder slower than the whole run: sampling finishes while it is still busy,
    and later requests replace the waiting one instead of queueing up."""
    gate = threading.Event()
    got: list[Preview] = []

    def slow(preview: Preview) -> None:
        gate.wait(timeout=30)
        got.append(preview)

    hook = PreviewHook(slow, PreviewSettings(method="latent2rgb"), runtime)
    result = asyncio.run(
        Executor(hooks=[hook]).run(Workflow.from_api(txt2img(steps=8)), diffusion_registry)
    )
    assert result.status == RunStatus.COMPLETED and got == []
    gate.set()
    hook.close()
    assert hook.dropped >= 1
    assert len(got) <= 2 and got[-1].step == 8


def test_pause_reports_the_job_tensors(diffusion_registry) -> None:
    result = asyncio.run(
        Executor(hooks=[StopAt("3", Position.STEP, 2)]).run(
            Workflow.from_api(txt2img(SDXL_CKPT, steps=6)), diffusion_registry
        )
    )
    assert result.status == RunStatus.SUSPENDED
    step, state = result.in_flight["3"]
    assert step == 2
    owned = tensor_bytes(state)
    # x, the denoised estimate, sigmas and the conditioning (2 x 77 x 64 floats + pooled).
    assert owned >= 2 * 77 * 64 * 4 + 2 * 4 * 8 * 8 * 4
    assert tensor_bytes({"model": state["model"]}) == 0  # the shared model is not the job's
