"""The debugger over the executor's control points. Never imports torch."""

from midrun.debug.breakpoints import (
    Breakpoint,
    BreakpointError,
    BreakpointPosition,
    BreakpointSet,
    BreakpointType,
)
from midrun.debug.controller import Command, ExecutionController, PauseContext, PauseReason
from midrun.debug.inspector import Inspector, Snapshot, StateDiff
from midrun.debug.session import DebugSession, DebugSessionConfig
from midrun.debug.trace import StopAt, Tracer

__all__ = [
    "Breakpoint",
    "BreakpointError",
    "BreakpointPosition",
    "BreakpointSet",
    "BreakpointType",
    "Command",
    "DebugSession",
    "DebugSessionConfig",
    "ExecutionController",
    "Inspector",
    "PauseContext",
    "PauseReason",
    "Snapshot",
    "StateDiff",
    "StopAt",
    "Tracer",
]
