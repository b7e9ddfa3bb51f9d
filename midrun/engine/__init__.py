"""The executor and its control points. Never imports torch."""

from midrun.engine.control import ControlPoint, Directive, Hook, Position, RunEvent
from midrun.engine.executor import Executor, RunResult, RunStatus
from midrun.engine.runstate import RunState

__all__ = [
    "ControlPoint",
    "Directive",
    "Executor",
    "Hook",
    "Position",
    "RunEvent",
    "RunResult",
    "RunState",
    "RunStatus",
]
