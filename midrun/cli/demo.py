"""The embedded default job, paused mid-run and resumed from disk.

With the diffusion extra and the shipped demo model: a text-to-image run on midrun's own
model is paused at step 8 of 20 (its state written to disk), its prompt is edited from
"red" to "blue", it resumes from the saved state and the checker reads the result; the
unedited state is resumed too and compared with an uninterrupted run.

Without them: the Game of Life pipeline, which needs nothing but Python, shows the same
promise (a run stops between two steps, becomes files, continues from those files, and
ends exactly where an uninterrupted run ends).
"""

from __future__ import annotations

import asyncio
import json
import sys
from importlib import resources
from pathlib import Path

from midrun.cli.progress import ProgressPrinter
from midrun.debug.trace import StopAt
from midrun.engine.executor import Executor, RunStatus
from midrun.engine.runstate import RunState
from midrun.engine.workflow_plan import RunContext, WorkflowPlan
from midrun.graph.loading import load_workflow
from midrun.nodes import builtin_registry

PAUSE_NODE, PAUSE_STEP = "2", 25
IMAGE_PAUSE_STEP = 8


def example_path(name: str) -> Path:
    """A workflow shipped in the package's ``examples/``."""
    return Path(str(resources.files("midrun") / "examples" / name))


def run_demo(data_dir: Path) -> int:
    if _diffusion_demo_available():
        return run_image_demo(data_dir)
    return run_life_demo(data_dir)


def _diffusion_demo_available() -> bool:
    from midrun.demo_model import weights

    if weights() is None:
        return False
    try:
        import diffusers  # noqa: F401
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def run_image_demo(data_dir: Path, *, device: str = "auto") -> int:
    import torch
    from PIL import Image

    from midrun.demo_model.checker import classify
    from midrun.diffusion.runtime import DiffusionRuntime
    from midrun.engine.edits import edit_suspended
    from midrun.nodes.comfy_impl import attach

    out = sys.stderr
    output_dir = data_dir / "output"
    runtime = DiffusionRuntime.create(None, device=device, output_dir=output_dir)
    registry = attach(builtin_registry(), runtime)
    document = json.loads(example_path("demo_txt2img.json").read_text(encoding="utf-8"))
    workflow = load_workflow(document, registry)
    prompt = document["6"]["inputs"]["text"]
    steps = document["3"]["inputs"]["steps"]
    out.write(f"midrun demo: '{prompt}', {steps} euler steps on the demo model; "
              f"pausing at step {IMAGE_PAUSE_STEP}\n")  # fmt: skip
    first = asyncio.run(
        Executor(
            hooks=[StopAt("3", step=IMAGE_PAUSE_STEP, reason="demo pause"), ProgressPrinter(out)]
        ).run(workflow, registry)
    )
    if first.status != RunStatus.SUSPENDED or first.state is None:
        out.write(f"expected a pause, got {first.status}: {first.error}\n")
        return 1
    state_dir = first.state.save(data_dir / "runs" / first.run_id)
    size = sum(p.stat().st_size for p in state_dir.rglob("*") if p.is_file())
    out.write(f"paused at step {IMAGE_PAUSE_STEP}/{steps}: state saved to {state_dir} "
              f"({size} bytes)\n")  # fmt: skip

    edited_prompt = prompt.replace("red", "blue")
    saved = RunState.load(state_dir)
    edited = edit_suspended(saved, "6", "text", edited_prompt, registry)
    out.write(f"edit: prompt '{prompt}' -> '{edited_prompt}' (from step {IMAGE_PAUSE_STEP + 1})\n")
    resumed = asyncio.run(Executor(hooks=[ProgressPrinter(out)]).resume(edited, registry))
    if not resumed.ok:
        out.write(f"resume failed: {resumed.error}\n")
        return 1
    image = resumed.plan.ui["9"]["images"][0]
    path = output_dir / image["subfolder"] / image["filename"]
    with Image.open(path) as png:
        verdict = classify(png)
    out.write(f"saved {path}; the checker sees a {verdict.colour} {verdict.shape}\n")

    unedited = asyncio.run(Executor().resume(RunState.load(state_dir), registry))
    straight = asyncio.run(Executor().run(workflow, registry))
    same = (
        unedited.ok
        and straight.ok
        and torch.equal(
            unedited.plan.target_values()["9"][0], straight.plan.target_values()["9"][0]
        )
    )
    out.write(f"unedited resume identical to an uninterrupted run: {'yes' if same else 'NO'}\n")
    return 0 if same else 1


def run_life_demo(data_dir: Path) -> int:

    registry = builtin_registry()
    document = json.loads(example_path("life.json").read_text(encoding="utf-8"))
    workflow = load_workflow(document, registry)
    output_dir = data_dir / "output"
    out = sys.stderr

    out.write(
        f"midrun demo: Game of Life, {document['2']['inputs']['generations']} steps; "
        f"pausing at step {PAUSE_STEP}\n"
    )
    first = asyncio.run(
        Executor(
            hooks=[StopAt(PAUSE_NODE, step=PAUSE_STEP, reason="demo pause"), ProgressPrinter(out)]
        ).run(workflow, registry, context=RunContext(output_dir=output_dir))
    )
    if first.status != RunStatus.SUSPENDED or first.state is None:
        out.write(f"expected a pause, got {first.status}\n")
        return 1
    state_dir = first.state.save(data_dir / "runs" / first.run_id)
    size = sum(p.stat().st_size for p in state_dir.rglob("*") if p.is_file())
    out.write(f"paused at step {PAUSE_STEP}: run state saved to {state_dir} ({size} bytes)\n")

    resumed = asyncio.run(
        Executor(hooks=[ProgressPrinter(out)]).resume(
            RunState.load(state_dir), registry, context=RunContext(output_dir=output_dir)
        )
    )
    straight = asyncio.run(
        Executor().run(workflow, registry, context=RunContext(output_dir=data_dir / "reference"))
    )
    assert isinstance(resumed.plan, WorkflowPlan) and isinstance(straight.plan, WorkflowPlan)
    text = resumed.plan.ui["4"]["text"][0]
    same = text == straight.plan.ui["4"]["text"][0]
    print(text)
    saved = resumed.plan.ui["4"]["files"][0]["filename"]
    out.write(f"saved {output_dir / saved}\n")
    out.write(f"resumed result identical to an uninterrupted run: {'yes' if same else 'NO'}\n")
    return 0 if same else 1
