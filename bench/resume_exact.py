"""Exact resume of the KSampler node, for every sampler and scheduler.

For each (sampler, scheduler) the KSampler node runs a tiny SD1.5-layout checkpoint
(random weights, CPU, fp32) for ``--steps`` steps uninterrupted, and again stopped after
step k for k in {0, 1, steps // 2, steps - 1}: the step state is written to disk as a
pause writes it (``RunState``: JSON plus tensor blobs). One fresh process then restores
every saved state, binds the model again, finishes, and the final latents are compared
with ``torch.equal``.

    python bench/resume_exact.py --json
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from report import emit  # bench/report.py (benchmarks run as scripts)

from midrun.diffusion import testing
from midrun.diffusion.ksampler import KSamplerStep
from midrun.diffusion.runtime import DiffusionRuntime
from midrun.engine.checkpoint import InFlightStep, WorkflowCheckpoint
from midrun.engine.codec import Decoder, Encoder
from midrun.engine.runstate import RunState
from midrun.nodes.comfy_core import SAMPLER_NAMES, SCHEDULER_NAMES
from midrun.nodes.comfy_impl import implementations

CKPT = "tiny_sd15.safetensors"

RESUME = """
import sys, torch
from pathlib import Path
from midrun.diffusion.ksampler import KSamplerStep
from midrun.diffusion.runtime import DiffusionRuntime
from midrun.engine.codec import Decoder
from midrun.engine.runstate import RunState
from midrun.nodes.comfy_impl import implementations
models, work = Path(sys.argv[1]), Path(sys.argv[2])
runtime = DiffusionRuntime.create(models, device="cpu")
model = implementations(runtime)["CheckpointLoaderSimple"](sys.argv[3])[0]
node = KSamplerStep()
for directory in sorted(work.glob("case-*")):
    saved = RunState.load(directory)
    in_flight = saved.plan.in_flight["3"].state
    state = node.resume(Decoder(saved.blobs).decode(in_flight), {"model": model})
    while not node.done(state):
        state = node.step(state)
    torch.save(node.finish(state)[0]["samples"], directory / "final.pt")
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        models = work / "models"
        testing.write_single_file(models / "checkpoints" / CKPT)
        runtime = DiffusionRuntime.create(models, device="cpu")
        nodes = implementations(runtime)
        model, clip, _ = nodes["CheckpointLoaderSimple"](CKPT)
        base = {
            "model": model,
            "seed": 42,
            "steps": args.steps,
            "cfg": 6.0,
            "positive": clip.encode("a red star on a white background"),
            "negative": clip.encode(""),
            "latent_image": nodes["EmptyLatentImage"](64, 64, 1)[0],
            "denoise": 1.0,
        }
        node = KSamplerStep()
        expected: dict[str, torch.Tensor] = {}
        stops = sorted({0, 1, args.steps // 2, args.steps - 1})
        for sampler in SAMPLER_NAMES:
            for scheduler in SCHEDULER_NAMES:
                inputs = {**base, "sampler_name": sampler, "scheduler": scheduler}
                state = node.start(inputs)
                saved_at = {}
                step = 0
                while True:
                    if step in stops:
                        saved_at[step] = state
                    if node.done(state):
                        break
                    state = node.step(state)
                    step += 1
                final = node.finish(state)[0]["samples"]
                for k, at in saved_at.items():
                    name = f"case-{sampler}-{scheduler}-{k}"
                    encoder = Encoder()
                    encoded = encoder.encode(at)
                    # Saved as a paused workflow saves a sampler: the node in flight.
                    plan = WorkflowCheckpoint(
                        workflow={}, targets=[], in_flight={"3": InFlightStep(k, encoded)}
                    )
                    RunState("workflow", name, plan, encoder.blobs).save(work / name)
                    # The saved form decodes back to the same tensors before any process hop.
                    assert torch.equal(Decoder(encoder.blobs).decode(encoded)["sampler"]["x"],
                                       at["sampler"]["x"])  # fmt: skip
                    expected[name] = final
        subprocess.run(
            [sys.executable, "-c", RESUME, str(models), str(work), CKPT],
            check=True,
            cwd=Path(__file__).resolve().parents[1],
        )
        identical = sum(
            torch.equal(torch.load(work / name / "final.pt"), final)
            for name, final in expected.items()
        )
    result = {
        "cases": len(expected),
        "bit_identical": int(identical),
        "samplers": list(SAMPLER_NAMES),
        "schedulers": list(SCHEDULER_NAMES),
        "stops": stops,
        "steps": args.steps,
        "device": "cpu/float32",
        "seconds": round(time.perf_counter() - started, 1),
    }
    emit(result, args.json)


if __name__ == "__main__":
    main()
