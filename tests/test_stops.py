"""The one stepping and breakpoint core (midrun.debug.stops), which the in-process
debugger and job hooks share."""

from __future__ import annotations

import pytest

from midrun.debug.breakpoints import Breakpoint, BreakpointSet
from midrun.debug.controller import Command
from midrun.debug.stops import StepMode, Stepping, match
from midrun.engine.control import ControlPoint, Position
from midrun.jobs.breakpoints import check_mode, step_mode_of


def point(node: str, position: Position, step: int | None = None, run: str = "r1",
          **inputs: object) -> ControlPoint:  # fmt: skip
    return ControlPoint(run_id=run, position=position, node_id=node, class_type="T",
                        inputs=inputs, step=step, total_steps=4 if step else None)  # fmt: skip


def test_step_modes_have_one_set_of_names() -> None:
    assert [m.command for m in StepMode] == ["step_over", "step_into", "step_out", "run_to"]
    assert {Command.STEP_OVER, Command.STEP_INTO, Command.STEP_OUT, Command.RUN_TO} == {
        m.command for m in StepMode}  # fmt: skip
    for mode in StepMode:
        assert StepMode.of_command(mode.command) is mode
    assert StepMode.of_command("continue") is None
    assert StepMode.of_command("step_sideways") is None
    assert step_mode_of("step_out") is StepMode.OUT
    assert step_mode_of("run_to") is None  # jobs step over, into and out only
    assert check_mode("into") is StepMode.INTO


@pytest.mark.parametrize(
    ("stepping", "stops", "passes"),
    [
        (Stepping(StepMode.INTO, "2", "before"), [("2", Position.STEP, 1)], []),
        (Stepping(StepMode.OVER, "2", "before"), [("3", Position.BEFORE, None)],
         [("2", Position.STEP, 1), ("2", Position.AFTER, None)]),
        (Stepping(StepMode.OUT, "2", "step"), [("2", Position.AFTER, None)],
         [("2", Position.STEP, 2), ("3", Position.BEFORE, None)]),
        (Stepping(StepMode.OUT, "2", "after"), [("3", Position.BEFORE, None)],
         [("3", Position.AFTER, None)]),
        # out of a subgraph: the first point of a node outside the instance "5"
        (Stepping(StepMode.OUT, "5:2", "after"), [("6", Position.BEFORE, None),
                                                  ("6", Position.AFTER, None)],
         [("5:3", Position.BEFORE, None), ("5:3", Position.STEP, 1)]),
        (Stepping(StepMode.RUN_TO, "1", "before", ("4", "after")),
         [("4", Position.AFTER, None)], [("4", Position.BEFORE, None)]),
    ],
)
def test_a_step_stops_where_its_mode_says(stepping, stops, passes) -> None:
    for node, position, step in stops:
        assert stepping.stops_at(point(node, position, step)), (node, position)
    for node, position, step in passes:
        assert not stepping.stops_at(point(node, position, step)), (node, position)
    assert not stepping.stops_at(point("9", Position.ERROR))


def test_match_scopes_counts_and_logs() -> None:
    bps = BreakpointSet()
    mine = bps.add(Breakpoint.create(node_id="3", position="step", every=2, run_id="r1"))
    bps.add(Breakpoint.create(node_id="3", position="step", step=1, run_id="other"))
    bps.add(Breakpoint.create(node_id="3", position="step", step=1, workflow_id="wf2"))
    logs = bps.add(Breakpoint.create(node_id="3", position="step", every=1,
                                     log_message="cfg={cfg}"))  # fmt: skip
    cond = bps.add(Breakpoint.create(node_id="3", position="before", condition="cfg > 5"))
    first = match(bps, point("3", Position.STEP, 1, cfg=7), workflow_id="wf1")
    assert first.hits == [] and [(b.id, m) for b, m in first.logs] == [(logs.id, "cfg=7")]
    second = match(bps, point("3", Position.STEP, 2, cfg=7), workflow_id="wf1")
    assert second.hits == [mine] and mine.hit_count == 1
    assert match(bps, point("3", Position.BEFORE, cfg=7)).hits == [cond]
    assert not match(bps, point("3", Position.BEFORE, cfg=5))
    assert not match(bps, point("4", Position.BEFORE, cfg=9))


def test_replacing_breakpoints_keeps_their_hit_counts() -> None:
    bps = BreakpointSet()
    bp = bps.add(Breakpoint.create(id="a", node_id="3", ignore_count=2))
    for _ in range(2):
        assert not match(bps, point("3", Position.BEFORE))
    reloaded = Breakpoint.from_json({**bp.to_json(), "hit_count": 0})
    bps.replace([reloaded])
    assert reloaded.hit_count == 2
    assert match(bps, point("3", Position.BEFORE)).hits == [reloaded]
