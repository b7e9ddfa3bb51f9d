"""Overhead of the executor's control points.

Workload: one steppable node doing ``--steps`` steps of 1 ms each (a busy wait, so a step
costs the same every time). Compared:

* bare: the same start/step/done/finish loop written by hand, no engine;
* engine, nothing attached;
* engine with a no-op hook (a control point per step, plus before/after per node).

``no_hook_overhead_pct`` is (engine - bare) / bare. ``noop_hook_us_per_point`` is measured
on zero-cost steps (so only the control point is timed): (hooked - plain) / points.
Each figure is the minimum over ``--repeat`` runs.

    python bench/engine_overhead.py --json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import time
from typing import Any

from midrun.engine.control import ControlPoint, Directive, Hook
from midrun.engine.executor import Executor
from midrun.graph.registry import NodeRegistry
from midrun.graph.types import FLOAT, INT, InputSpec, NodeResult, NodeType, OutputSpec
from midrun.graph.workflow import Workflow


class BusySteps:
    """Each step spins for ``step_ms`` milliseconds."""

    def start(self, inputs: dict[str, Any]) -> dict[str, Any]:
        return {"i": 0, "n": inputs["steps"], "step_s": inputs["step_ms"] / 1000.0}

    def step(self, state: dict[str, Any]) -> dict[str, Any]:
        end = time.perf_counter() + state["step_s"]
        while time.perf_counter() < end:
            pass
        state["i"] += 1
        return state

    def done(self, state: dict[str, Any]) -> bool:
        return state["i"] >= state["n"]

    def finish(self, state: dict[str, Any]) -> tuple[int]:
        return (state["i"],)


class NoopHook(Hook):
    async def on_point(self, point: ControlPoint) -> Directive | None:
        return None


def registry() -> NodeRegistry:
    return NodeRegistry(
        [
            NodeType(
                "BusySteps",
                (InputSpec("steps", INT), InputSpec("step_ms", FLOAT)),
                (OutputSpec(INT),),
                BusySteps(),
            ),
            NodeType(
                "Sink",
                (InputSpec("value", INT),),
                (),
                lambda value: NodeResult(ui={"value": [value]}),
                output_node=True,
            ),
        ]
    )


def workflow(steps: int, step_ms: float) -> Workflow:
    return Workflow.from_api(
        {
            "1": {"class_type": "BusySteps", "inputs": {"steps": steps, "step_ms": step_ms}},
            "2": {"class_type": "Sink", "inputs": {"value": ["1", 0]}},
        }
    )


def bare(steps: int, step_ms: float) -> float:
    impl = BusySteps()
    started = time.perf_counter()
    state = impl.start({"steps": steps, "step_ms": step_ms})
    while not impl.done(state):
        state = impl.step(state)
    impl.finish(state)
    return time.perf_counter() - started


def engine(steps: int, step_ms: float, hooks: list[Hook]) -> float:
    reg, wf = registry(), workflow(steps, step_ms)
    executor = Executor(hooks=hooks)

    async def go() -> float:
        started = time.perf_counter()
        result = await executor.run(wf, reg)
        elapsed = time.perf_counter() - started
        assert result.ok and result.plan.ui["2"]["value"] == [steps]
        return elapsed

    return asyncio.run(go())


def measure(steps: int, step_ms: float, repeat: int, points: int) -> dict[str, Any]:
    bare_s = min(bare(steps, step_ms) for _ in range(repeat))
    plain_s = min(engine(steps, step_ms, []) for _ in range(repeat))
    hooked_s = min(engine(steps, step_ms, [NoopHook()]) for _ in range(repeat))
    # The per-point cost, isolated on zero-cost steps.
    zero_plain = min(engine(points, 0.0, []) for _ in range(repeat))
    zero_hooked = min(engine(points, 0.0, [NoopHook()]) for _ in range(repeat))
    control_points = points + 4  # one per step, before/after each of the two nodes
    return {
        "no_hook_overhead_pct": round((plain_s - bare_s) / bare_s * 100, 4),
        "noop_hook_us_per_point": round((zero_hooked - zero_plain) / control_points * 1e6, 3),
        "steps": steps,
        "step_ms": step_ms,
        "noop_hook_overhead_pct_at_step_ms": round((hooked_s - bare_s) / bare_s * 100, 4),
        "bare_s": round(bare_s, 6),
        "engine_s": round(plain_s, 6),
        "engine_noop_hook_s": round(hooked_s, 6),
        "points_for_hook_cost": points,
        "repeat": repeat,
        "python": platform.python_version(),
        "machine": platform.machine(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--step-ms", type=float, default=1.0)
    parser.add_argument("--points", type=int, default=100000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    figures = measure(args.steps, args.step_ms, args.repeat, args.points)
    if args.json:
        print(json.dumps(figures))
    else:
        for key, value in figures.items():
            print(f"{key:36} {value}")


if __name__ == "__main__":
    main()
