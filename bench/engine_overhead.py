"""Overhead of the executor's control points.

Workload: one steppable node doing ``--steps`` steps of 1 ms each (a busy wait, so a step
costs the same every time). Compared:

* bare: the same start/step/done/finish loop written by hand, no engine;
* engine, nothing attached;
* engine with a no-op hook (a control point per step, plus before/after per node).

``no_hook_overhead_pct`` is the median over ``--repeat`` interleaved (bare, engine) pairs of
(engine - bare) / bare. ``no_hook_ns_per_step`` is the engine's own cost per step, measured
on zero-cost steps, and ``no_hook_overhead_pct_derived`` that cost over a ``--step-ms`` step
(a steadier figure than the direct one, whose noise floor is about 0.05 % here).
``noop_hook_us_per_point`` is measured on zero-cost steps too: (hooked - plain) / points.

    python bench/engine_overhead.py --json
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import statistics
import time
from collections.abc import Callable
from typing import Any

from report import emit  # bench/report.py (benchmarks run as scripts)

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


def paired_overhead(
    steps: int, step_ms: float, repeat: int, hooks_factory: Callable[[], list[Hook]]
) -> tuple[float, float, float]:
    """Interleave bare and engine runs; return (median overhead fraction, bare s, engine s).
    Pairing cancels slow drifts (frequency, other load) that a min-of-N would not."""
    fractions, bares, engines = [], [], []
    for _ in range(repeat):
        b = bare(steps, step_ms)
        e = engine(steps, step_ms, hooks_factory())
        fractions.append((e - b) / b)
        bares.append(b)
        engines.append(e)
    return statistics.median(fractions), statistics.median(bares), statistics.median(engines)


def per_step_cost(points: int, repeat: int, hooks_factory: Callable[[], list[Hook]]) -> float:
    """Seconds the engine adds per step over the bare loop, on zero-cost steps."""
    diffs = [
        (engine(points, 0.0, hooks_factory()) - bare(points, 0.0)) / points for _ in range(repeat)
    ]
    return statistics.median(diffs)


def measure(steps: int, step_ms: float, repeat: int, points: int) -> dict[str, Any]:
    plain_pct, bare_s, plain_s = paired_overhead(steps, step_ms, repeat, list)
    hooked_pct, _, hooked_s = paired_overhead(steps, step_ms, repeat, lambda: [NoopHook()])
    plain_step = per_step_cost(points, repeat, list)
    hooked_step = per_step_cost(points, repeat, lambda: [NoopHook()])
    control_points = points + 4  # one per step, before/after each of the two nodes
    return {
        "no_hook_overhead_pct": round(plain_pct * 100, 4),
        "noop_hook_us_per_point": round(
            (hooked_step - plain_step) * points / control_points * 1e6, 3
        ),
        "steps": steps,
        "step_ms": step_ms,
        "no_hook_ns_per_step": round(plain_step * 1e9, 1),
        "no_hook_overhead_pct_derived": round(plain_step / (step_ms / 1000) * 100, 5)
        if step_ms
        else None,
        "noop_hook_overhead_pct_at_step_ms": round(hooked_pct * 100, 4),
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
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    figures = measure(args.steps, args.step_ms, args.repeat, args.points)
    emit(figures, args.json)


if __name__ == "__main__":
    main()
