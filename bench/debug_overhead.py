"""Cost of the debugger: absent, and attached with 100 breakpoints on other nodes.

Workload: a steppable node doing ``--steps`` steps of 1 ms (busy wait), as in
engine_overhead.py. ``disabled_overhead_pct`` compares the engine with no debugger to a
hand-written loop. ``enabled_no_hit_us_per_point`` is the extra time per control point
with a DebugSession attached holding ``--breakpoints`` breakpoints on other nodes (none
matching), measured on zero-cost steps so only the control point is timed. Medians over
``--repeat`` runs; the disabled figure pairs each engine run with a bare run.

    python bench/debug_overhead.py --json
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from engine_overhead import bare, registry, workflow
from report import emit  # bench/report.py (benchmarks run as scripts)

from midrun.debug.session import DebugSession, DebugSessionConfig
from midrun.engine.executor import Executor


def session_with(breakpoints: int) -> DebugSession:
    session = DebugSession(DebugSessionConfig(record_history=True))
    for i in range(breakpoints):
        kind = i % 4
        if kind == 0:
            session.set_breakpoint(node_id=f"other-{i}", position="before")
        elif kind == 1:
            session.set_breakpoint(
                node_id=f"other-{i}", condition="step > 3", position="step", every=2
            )
        elif kind == 2:
            session.set_breakpoint(
                node_id=f"other-{i}", position="after", log_message="value {outputs}"
            )
        else:
            session.set_breakpoint(node_id=f"other-{i}", state_key="inputs.steps", position="after")
    return session


def timed(steps: int, step_ms: float, session: DebugSession | None) -> float:
    reg, wf = registry(), workflow(steps, step_ms)

    async def go() -> float:
        hooks = [session.create_hook()] if session is not None else []
        started = time.perf_counter()
        result = await Executor(hooks=hooks).run(wf, reg)
        elapsed = time.perf_counter() - started
        assert result.ok and result.plan.ui["2"]["value"] == [steps]
        return elapsed

    return asyncio.run(go())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--step-ms", type=float, default=1.0)
    parser.add_argument("--points", type=int, default=100000)
    parser.add_argument("--breakpoints", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    pairs, bares = [], []
    for _ in range(args.repeat):  # interleaved pairs cancel slow drifts
        b = bare(args.steps, args.step_ms)
        pairs.append((timed(args.steps, args.step_ms, None) - b) / b)
        bares.append(b)
    attached = [
        (
            timed(args.steps, args.step_ms, session_with(args.breakpoints))
            - bare(args.steps, args.step_ms)
        )
        / args.steps
        for _ in range(args.repeat)
    ]
    per_point = [
        (timed(args.points, 0.0, session_with(args.breakpoints)) - timed(args.points, 0.0, None))
        for _ in range(args.repeat)
    ]
    points = args.points + 4
    figures = {
        "disabled_overhead_pct": round(statistics.median(pairs) * 100, 4),
        "enabled_no_hit_us_per_point": round(statistics.median(per_point) / points * 1e6, 3),
        "breakpoints_set": args.breakpoints,
        "enabled_us_per_step_at_step_ms": round(statistics.median(attached) * 1e6, 3),
        "steps": args.steps,
        "step_ms": args.step_ms,
        "points_for_per_point_cost": args.points,
        "repeat": args.repeat,
        "python": platform.python_version(),
    }
    emit(figures, args.json)


if __name__ == "__main__":
    main()
