"""Where a run stops: breakpoint matching and stepping at a control point.

This is the one stepping and breakpoint core. The in-process debugger
(:class:`midrun.debug.controller.ExecutionController`, which holds a run in memory) and a
job's hook (:class:`midrun.jobs.hook.JobHook`, which suspends the job to its checkpoint)
both ask it the same two questions at every control point: which breakpoints does this
point meet (:func:`match`), and does the step in progress end here
(:meth:`Stepping.stops_at`). What each does about the answer is its own business.

Step modes have one set of names (:class:`StepMode`); a command or a job request that
asks for one is ``"step_" + mode`` (``step_over``, ``step_into``, ``step_out``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from midrun.debug.breakpoints import Breakpoint, BreakpointPosition, BreakpointSet
from midrun.engine.control import ControlPoint, Position

# A control point's position in the words breakpoints use.
BREAKPOINT_POSITION = {
    Position.BEFORE: BreakpointPosition.BEFORE,
    Position.AFTER: BreakpointPosition.AFTER,
    Position.STEP: BreakpointPosition.STEP,
    Position.ERROR: BreakpointPosition.ON_ERROR,
}

STEP_PREFIX = "step_"  # a command or job request naming a step mode: "step_" + mode


class StepMode(StrEnum):
    """How far a step goes from where the run stopped.

    * ``over``: to the next node's start (its ``before`` point);
    * ``into``: to the next control point of any kind, a sampler step included;
    * ``out``: out of the node it stopped in (to that node's ``after`` point) or, from a
      finished node inside a subgraph, out of the subgraph (to the first point of a node
      outside it);
    * ``run_to``: to a given node and position (``Stepping.target``).
    """

    OVER = "over"
    INTO = "into"
    OUT = "out"
    RUN_TO = "run_to"

    @property
    def command(self) -> str:
        """The command / job request that asks for this step."""
        return self.value if self is StepMode.RUN_TO else STEP_PREFIX + self.value

    @classmethod
    def of_command(cls, command: str | None) -> StepMode | None:
        """The step mode a command or job request names, if any."""
        if not command:
            return None
        if command == StepMode.RUN_TO.value:
            return StepMode.RUN_TO
        if command.startswith(STEP_PREFIX):
            try:
                return cls(command[len(STEP_PREFIX) :])
            except ValueError:
                return None
        return None


@dataclass(frozen=True, slots=True)
class Stepping:
    """A step in progress: ``mode``, from where the run stood (``node_id`` at
    ``position``), to ``target`` (``(node_id, position)``) for ``run_to``."""

    mode: StepMode
    node_id: str | None = None
    position: str | None = None
    target: tuple[str, str] | None = None

    def stops_at(self, point: ControlPoint) -> bool:
        """Whether the step ends at ``point``. Error points are not steps' business (a
        debugger may hold a run there on its own account)."""
        if point.position == Position.ERROR:
            return False
        mode = self.mode
        if mode == StepMode.INTO:
            return True
        if mode == StepMode.RUN_TO:
            return self.target is not None and (point.node_id, point.position.value) == self.target
        if mode == StepMode.OUT and self.node_id is not None:
            if self.position in (Position.BEFORE.value, Position.STEP.value):
                return point.node_id == self.node_id and point.position == Position.AFTER
            if ":" in self.node_id:  # out of the subgraph the finished node belongs to
                prefix = self.node_id.rsplit(":", 1)[0] + ":"
                return not point.node_id.startswith(prefix)
        return point.position == Position.BEFORE  # over (and out of a top-level node)


def point_state(point: ControlPoint) -> dict[str, Any]:
    """What a point shows: a StateGraph's state (with the update applied after a node), or
    a workflow node's inputs/outputs (and step state inside a steppable node)."""
    if point.kind == "stategraph":
        state = dict(point.inputs)
        if point.outputs and isinstance(point.outputs[0], Mapping):
            state.update(point.outputs[0])
        return state
    values: dict[str, Any] = {"inputs": dict(point.inputs)}
    if point.outputs is not None:
        values["outputs"] = list(point.outputs)
    if point.step_state is not None:
        values["step_state"] = point.step_state
    return values


def condition_names(point: ControlPoint, state: dict[str, Any]) -> dict[str, Any]:
    """Names a condition may use: the state's own keys, plus ``state``, ``inputs``,
    ``outputs``, ``update``, ``step``, ``total_steps``, ``node``, ``position``, ``error``."""
    names: dict[str, Any] = dict(state) if point.kind == "stategraph" else dict(point.inputs)
    names.update(
        state=state,
        inputs=point.inputs,
        node=point.node_id,
        class_type=point.class_type,
        position=BREAKPOINT_POSITION[point.position].value,
        step=point.step,
        total_steps=point.total_steps,
        error=point.error,
        step_state=point.step_state,
        outputs=list(point.outputs) if point.outputs is not None else None,
        update=point.outputs[0] if point.kind == "stategraph" and point.outputs else None,
    )
    return names


@dataclass(slots=True)
class Match:
    """What a point met: breakpoints that stop the run, logpoints with their messages,
    and breakpoints whose condition or message passed a limit of the evaluator there
    (``failed``: they are disabled, their ``failure`` says why, and the run goes on)."""

    hits: list[Breakpoint] = field(default_factory=list)
    logs: list[tuple[Breakpoint, str]] = field(default_factory=list)
    failed: list[Breakpoint] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.hits or self.logs or self.failed)


def match(
    breakpoints: BreakpointSet,
    point: ControlPoint,
    *,
    workflow_id: str | None = None,
    state: dict[str, Any] | None = None,
) -> Match:
    """The enabled breakpoints of ``breakpoints`` that fire at ``point`` (counting their
    hits), for a run of ``workflow_id``. A breakpoint scoped to another run or workflow
    does not fire. ``state`` is :func:`point_state` when the caller has it already."""
    found = Match()
    candidates = breakpoints.candidates(point.node_id)
    if not candidates:
        return found
    position = BREAKPOINT_POSITION[point.position].value
    names: dict[str, Any] | None = None
    for bp in candidates:
        if not bp.enabled or not bp.position_matches(position, point.step):
            continue
        if bp.run_id is not None and bp.run_id != point.run_id:
            continue
        if bp.workflow_id is not None and bp.workflow_id != workflow_id:
            continue
        if names is None:
            names = condition_names(point, state if state is not None else point_state(point))
        fired = bp.check(names, point.run_id)
        message = bp.message(names) if fired and bp.is_logpoint else None
        if not bp.enabled:  # its condition or message passed a limit
            found.failed.append(bp)
        elif not fired:
            continue
        elif bp.is_logpoint:
            found.logs.append((bp, message or ""))
        else:
            found.hits.append(bp)
    return found
