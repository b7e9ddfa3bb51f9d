"""What midrun's step loop costs next to a bare diffusers UNet loop on the same model.

Model: a UNet2DConditionModel with random weights, SD1.5's architecture by default
(``--arch tiny`` for the test-size one), CFG batch of 2, Euler, ``--steps`` steps at
``--resolution`` pixels. Compared per step (median of ``--repeat`` interleaved runs):

* bare: a hand-written loop: scale the input, one batched UNet call, CFG, Euler update;
* engine: the KSampler node run by the executor with a hook attached, so every step
  passes a control point (the path a job takes);
* engine + previews at the default settings (method auto -> latent2rgb, every step,
  JPEG, decoded on the preview thread).

Also: the bytes of a paused run's state on disk and the time to write it, and the time
to swap a LoRA strength between two steps.

    python bench/step_overhead.py --json
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from report import emit  # bench/report.py (benchmarks run as scripts)

from midrun.diffusion import testing
from midrun.diffusion.checkpoints import Components, _shipped
from midrun.diffusion.devices import placement
from midrun.diffusion.families import SD15
from midrun.diffusion.ksampler import KSamplerStep
from midrun.diffusion.lora import LoraDelta, LoraWeights
from midrun.diffusion.models import DiffusionModel, LoadedModel
from midrun.diffusion.previews import PreviewHook, PreviewSettings
from midrun.diffusion.runtime import place
from midrun.diffusion.schedule import ScheduleConfig
from midrun.diffusion.schedulers import sampling_sigmas
from midrun.engine.checkpoint import InFlightStep, WorkflowCheckpoint
from midrun.engine.codec import Encoder
from midrun.engine.control import ControlPoint, Directive, Hook, Position
from midrun.engine.executor import Executor
from midrun.engine.runstate import RunState
from midrun.graph.registry import NodeRegistry
from midrun.graph.types import InputSpec, NodeType, OutputSpec
from midrun.graph.workflow import Workflow
from midrun.nodes.comfy_core import comfy_core_types


class StepClock(Hook):
    """Timestamps every step point of the sampler."""

    def __init__(self) -> None:
        self.times: list[float] = []

    async def on_point(self, point: ControlPoint) -> Directive | None:
        if point.position == Position.STEP:
            self.times.append(time.perf_counter())
        return None


def build_model(arch: str, where: Any) -> LoadedModel:
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)
    config = _shipped(SD15, "unet")
    if arch == "tiny":
        config.update(testing.TINY_UNET["sd15"])
    unet = UNet2DConditionModel.from_config(config).eval().requires_grad_(False)
    unet = place(unet, where.device, where.dtype)
    components = Components(SD15, unet, None, [], ScheduleConfig(), f"random-{arch}")
    return LoadedModel(f"random-{arch}", components, where)


def bare_loop(model: LoadedModel, sigmas: torch.Tensor, x: torch.Tensor, context: torch.Tensor,
              cfg: float) -> float:  # fmt: skip
    """Seconds per step of the plain loop."""
    unet, schedule = model.components.unet, model.schedule
    dtype, device = model.placement.dtype, model.placement.device
    x = x.clone()
    sync(device)
    start = time.perf_counter()
    with torch.no_grad():
        for i in range(len(sigmas) - 1):
            sigma = sigmas[i].to(device)
            x_in = (x / (sigma**2 + 1) ** 0.5).to(dtype)
            t = schedule.timestep(sigma.reshape(1))
            eps = unet(torch.cat([x_in, x_in]), t.repeat(2), encoder_hidden_states=context,
                       return_dict=False)[0].float()  # fmt: skip
            cond, uncond = (x - eps * sigma).chunk(2)
            denoised = uncond + (cond - uncond) * cfg
            x = x + (x - denoised) / sigma * (sigmas[i + 1].to(device) - sigma)
    sync(device)
    return (time.perf_counter() - start) / (len(sigmas) - 1)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def engine_registry(model: LoadedModel, pos: Any, neg: Any, latent: dict) -> NodeRegistry:
    ksampler = next(t for t in comfy_core_types() if t.class_type == "KSampler")
    ksampler.impl = KSamplerStep()
    ksampler.output_node = True  # the workflow ends at the sampler
    inputs = NodeType(
        "BenchInputs",
        (InputSpec("n", "INT", default=0),),
        tuple(OutputSpec(t) for t in ("MODEL", "CONDITIONING", "CONDITIONING", "LATENT")),
        lambda n: (DiffusionModel(model), pos, neg, latent),
        cacheable=False,
    )
    return NodeRegistry([inputs, ksampler])


def engine_workflow(steps: int, cfg: float) -> Workflow:
    return Workflow.from_api({
        "1": {"class_type": "BenchInputs", "inputs": {"n": 0}},
        "2": {"class_type": "KSampler", "inputs": {
            "model": ["1", 0], "seed": 1, "steps": steps, "cfg": cfg, "sampler_name": "euler",
            "scheduler": "karras", "positive": ["1", 1], "negative": ["1", 2],
            "latent_image": ["1", 3], "denoise": 1.0}},
    })  # fmt: skip


def engine_loop(registry: NodeRegistry, steps: int, cfg: float, hooks: list[Hook],
                device: torch.device) -> float:  # fmt: skip
    clock = StepClock()
    result = asyncio.run(
        Executor(hooks=[clock, *hooks]).run(engine_workflow(steps, cfg), registry, targets=["2"])
    )
    assert result.ok, result.error
    sync(device)
    gaps = [b - a for a, b in zip(clock.times, clock.times[1:], strict=False)]
    return statistics.median(gaps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", choices=("sd15", "tiny"), default="sd15")
    parser.add_argument("--resolution", type=int, default=None)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    where = placement(args.device, args.precision)
    resolution = args.resolution or (512 if where.device.type == "cuda" else 256)
    model = build_model(args.arch, where)
    hidden = model.components.unet.config.cross_attention_dim
    gen = torch.Generator().manual_seed(0)
    pos = [[torch.randn(1, 77, hidden, generator=gen), {}]]
    neg = [[torch.randn(1, 77, hidden, generator=gen), {}]]
    latent = {"samples": torch.zeros(1, 4, resolution // 8, resolution // 8)}
    cfg = 7.0
    registry = engine_registry(model, pos, neg, latent)
    sigmas = sampling_sigmas(model.schedule, "karras", args.steps, "euler")
    x = torch.randn(latent["samples"].shape, generator=gen).to(where.device) * sigmas[0]
    context = torch.cat([pos[0][0], neg[0][0]]).to(where.device, where.dtype)

    engine_loop(registry, 2, cfg, [], where.device)  # warm-up
    bare_loop(model, sigmas[:3], x, context, cfg)
    bare, engine, previewed = [], [], []
    delivered = 0
    for _ in range(args.repeat):
        bare.append(bare_loop(model, sigmas, x, context, cfg))
        engine.append(engine_loop(registry, args.steps, cfg, [], where.device))
        got: list[Any] = []
        hook = PreviewHook(got.append, PreviewSettings())
        previewed.append(engine_loop(registry, args.steps, cfg, [hook], where.device))
        hook.close()
        delivered += len(got)
    bare_s, engine_s, preview_s = (statistics.median(v) for v in (bare, engine, previewed))

    # A pause after half the steps: encode the run and write it, as a job pause does.
    from midrun.debug.trace import StopAt

    suspended = asyncio.run(
        Executor(hooks=[StopAt("2", Position.STEP, args.steps // 2)]).run(
            engine_workflow(args.steps, cfg), registry, targets=["2"]
        )
    )
    step_state = suspended.in_flight["2"][1]
    tmp = Path(tempfile.mkdtemp())
    saves = []
    for i in range(5):
        start = time.perf_counter()
        encoder = Encoder()
        step = InFlightStep(0, encoder.encode(step_state))
        plan = WorkflowCheckpoint(workflow={}, targets=[], in_flight={"2": step})
        RunState("workflow", "pause", plan, encoder.blobs).save(tmp / f"s{i}")
        saves.append(time.perf_counter() - start)
    state_bytes = sum(p.stat().st_size for p in (tmp / "s0").rglob("*") if p.is_file())
    shutil.rmtree(tmp)

    # A LoRA strength edit between two steps: a new MODEL value, swapped in.
    delta = LoraDelta(torch.zeros(4, 4, 3, 3), torch.zeros(320, 4, 1, 1), 1.0)
    lora = LoraWeights("bench", {("unet", "conv_in"): delta})
    node = KSamplerStep()
    swaps = []
    for strength in (0.1, 0.2, 0.3, 0.4, 0.5):
        start = time.perf_counter()
        node.swap(step_state, {"model": DiffusionModel(model).with_lora(lora, strength)})
        swaps.append(time.perf_counter() - start)

    device = (torch.cuda.get_device_name(where.device) if where.device.type == "cuda"
              else where.device.type)  # fmt: skip
    result = {
        "loop_overhead_pct": round((engine_s - bare_s) / bare_s * 100, 3),
        "preview_overhead_pct": round((preview_s - engine_s) / engine_s * 100, 3),
        "bare_step_ms": round(bare_s * 1000, 2),
        "engine_step_ms": round(engine_s * 1000, 2),
        "preview_step_ms": round(preview_s * 1000, 2),
        "previews_delivered": delivered,
        "pause_state_bytes": state_bytes,
        "pause_save_ms": round(statistics.median(saves) * 1000, 2),
        "lora_swap_ms": round(statistics.median(swaps) * 1000, 3),
        "device": f"{device} ({where.label})",
        "model": f"{args.arch} UNet, random weights, {resolution}x{resolution}, CFG batch 2",
        "steps": args.steps,
        "repeat": args.repeat,
    }
    emit(result, args.json)


if __name__ == "__main__":
    main()
