"""The embedded default job: the example pipeline, paused mid-run and resumed from disk.

It shows the engine's promise on a workload that needs nothing but Python: the run stops
between two steps, becomes files, continues from those files, and ends exactly where an
uninterrupted run ends.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

from midrun.cli.progress import ProgressPrinter
from midrun.debug.trace import StopAt
from midrun.engine.executor import Executor, RunStatus
from midrun.engine.runstate import RunState
from midrun.engine.workflow_plan import RunContext, WorkflowPlan
from midrun.graph.loading import load_workflow
from midrun.nodes import builtin_registry

PAUSE_NODE, PAUSE_STEP = "2", 25


def run_demo(data_dir: Path) -> int:
    from midrun.cli.main import example_path

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
