"""Control points: the one place where pause, abort, breakpoints, previews and progress happen.

The executor stops at a control point before every node, after every node, after every
step of a steppable node and when a node raises. If hooks are attached it builds a
:class:`ControlPoint` and asks each :class:`Hook` in turn; the first non-None
:class:`Directive` decides. With no hooks attached nothing is built and nothing is asked.

A hook may also simply *wait* inside ``on_point`` (an in-process debugger holding a run),
or return ``Directive.suspend(...)`` to have the run checkpointed and handed back as a
:class:`~midrun.engine.runstate.RunState` (a job pause: the run becomes files).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class Position(StrEnum):
    BEFORE = "before"  # inputs resolved, node not started
    STEP = "step"  # a steppable node completed step ``step`` of ``total_steps``
    AFTER = "after"  # node finished, outputs known
    ERROR = "error"  # node raised; ``error`` holds the exception


class Action(StrEnum):
    CONTINUE = "continue"
    SUSPEND = "suspend"
    ABORT = "abort"


@dataclass(frozen=True, slots=True)
class Directive:
    """What a hook wants at a control point."""

    action: Action
    reason: str = ""

    @classmethod
    def suspend(cls, reason: str = "pause requested") -> Directive:
        """Stop at this point, checkpoint the run and return it as a RunState."""
        return cls(Action.SUSPEND, reason)

    @classmethod
    def abort(cls, reason: str = "abort requested") -> Directive:
        """Stop at this point and end the run, keeping what finished."""
        return cls(Action.ABORT, reason)


@dataclass(slots=True)
class ControlPoint:
    """Where a run stands. For a StateGraph, ``inputs`` is the shared state and
    ``outputs`` the node's update."""

    run_id: str
    position: Position
    node_id: str
    class_type: str
    inputs: Mapping[str, Any]
    step: int | None = None
    total_steps: int | None = None
    step_state: Any = None
    outputs: tuple[Any, ...] | None = None
    error: BaseException | None = None
    kind: str = "workflow"  # or "stategraph": the plan kind this point belongs to
    # At step and before points: encodes the whole run as it stands (a RunState) without
    # stopping it, for periodic checkpoints. Costs one encode of the plan: call it when due.
    checkpoint: Callable[[], Any] | None = None


@dataclass(frozen=True, slots=True)
class RunEvent:
    """A run-level event: ``started``, ``cached``, ``executed`` (a node finished and its
    results are recorded; ``ui`` holds what it shows), ``completed``, ``suspended``,
    ``aborted`` or ``failed``; ``data`` carries ids, reasons and errors."""

    kind: str
    run_id: str
    data: dict[str, Any] = field(default_factory=dict)


class Hook:
    """Base for things plugged into a run's control points. Override what you need."""

    async def on_point(self, point: ControlPoint) -> Directive | None:
        return None

    async def on_event(self, event: RunEvent) -> None:
        return None
