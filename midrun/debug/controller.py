"""The execution controller: the debugger's hook on a run's control points.

At each control point it checks, in this order: a pending "pause now" request, the current
stepping mode (step over / into / out, run to node), and the breakpoints indexed under the
node. A hit holds the run *in memory* at that point (the hook awaits) until a command
arrives from any thread or task: continue, step over, step into, step out, run to, stop
(abort the run) or suspend (checkpoint it to a RunState). Logpoints emit an ``output``
event and do not hold the run. With nothing to do at a point the cost is a few attribute
reads and one dictionary lookup.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from midrun.core.errors import MidrunError
from midrun.debug import stops
from midrun.debug.breakpoints import BreakpointPosition, BreakpointSet
from midrun.debug.inspector import Inspector, summarise
from midrun.debug.stops import BREAKPOINT_POSITION, StepMode, Stepping, point_state
from midrun.engine.control import ControlPoint, Directive, Hook, Position, RunEvent

log = logging.getLogger("midrun.debug")

Listener = Callable[[str, dict[str, Any]], None]

class PauseReason(StrEnum):
    BREAKPOINT = "breakpoint"
    STEP = "step"
    PAUSE_REQUEST = "pause"
    EXCEPTION = "exception"
    RUN_TO = "run_to"


class Command(StrEnum):
    """What releases a held run. The step commands are ``StepMode.command``."""

    CONTINUE = "continue"
    STEP_OVER = StepMode.OVER.command
    STEP_INTO = StepMode.INTO.command
    STEP_OUT = StepMode.OUT.command
    RUN_TO = StepMode.RUN_TO.command
    STOP = "stop"
    SUSPEND = "suspend"


class NotPausedError(MidrunError):
    """A command that needs a paused run arrived while it runs (or after it ended)."""

    type = "not_paused"


@dataclass(slots=True)
class PauseContext:
    """Where and why a run is held."""

    run_id: str
    node_id: str
    class_type: str
    position: BreakpointPosition
    reason: PauseReason
    step: int | None = None
    total_steps: int | None = None
    breakpoint_ids: list[str] = field(default_factory=list)
    error: str | None = None
    error_type: str | None = None
    time: float = field(default_factory=time.time)
    state: dict[str, Any] = field(default_factory=dict)
    snapshot_id: int | None = None
    kind: str = "workflow"

    def to_json(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "node_id": self.node_id,
            "class_type": self.class_type,
            "position": self.position.value,
            "reason": self.reason.value,
            "step": self.step,
            "total_steps": self.total_steps,
            "breakpoint_ids": list(self.breakpoint_ids),
            "error": self.error,
            "error_type": self.error_type,
            "time": self.time,
            "snapshot_id": self.snapshot_id,
            "kind": self.kind,
            "state": {k: summarise(v) for k, v in self.state.items()},
        }


class ExecutionController(Hook):
    """Breakpoints, stepping and pause-now over one run at a time (or several in turn)."""

    def __init__(
        self,
        breakpoints: BreakpointSet | None = None,
        inspector: Inspector | None = None,
        *,
        workflow_id: str | None = None,
        record_history: bool = True,
    ) -> None:
        self.breakpoints = breakpoints if breakpoints is not None else BreakpointSet()
        self.inspector = inspector if inspector is not None else Inspector()
        self.workflow_id = workflow_id
        self.record_history = record_history
        self.listeners: list[Listener] = []
        self._lock = threading.Lock()
        self._pause_requested = False
        self._stop_requested = False
        self._stepping: Stepping | None = None
        self._held: (
            tuple[PauseContext, asyncio.Future[tuple[Command, Any]], asyncio.AbstractEventLoop]
            | None
        ) = None
        self.last_context: PauseContext | None = None
        self.finished: str | None = None

    # -- commands (any thread) ---------------------------------------------------------

    @property
    def is_paused(self) -> bool:
        return self._held is not None

    @property
    def context(self) -> PauseContext | None:
        held = self._held
        return held[0] if held is not None else None

    def request_pause(self) -> None:
        """Hold the run at its next control point."""
        self._pause_requested = True

    def hold_at(self, node_id: str, position: str) -> None:
        """Hold the run (or the next one, resumed from a suspend) at ``node_id``'s next
        ``position`` point, as ``run_to`` does from a stop."""
        self._stepping = Stepping(StepMode.RUN_TO, node_id, position, (node_id, position))

    def request_stop(self) -> None:
        """Abort the run: now if it is held, else at its next control point."""
        with self._lock:
            held = self._held
        if held is not None:
            self.resume(Command.STOP)
        else:
            self._stop_requested = True

    def resume(self, command: Command | str = Command.CONTINUE, target: Any = None) -> None:
        """Release a held run with a command. Safe from any thread or event loop."""
        command = Command(command)
        if command == Command.RUN_TO and not target:
            raise MidrunError("run_to needs a node id")
        with self._lock:
            held = self._held
            if held is None:
                raise NotPausedError(f"Cannot {command.value}: the run is not paused")
            self._held = None
        _, future, loop = held
        loop.call_soon_threadsafe(_settle, future, (command, target))

    # -- the hook ----------------------------------------------------------------------

    async def on_event(self, event: RunEvent) -> None:
        if event.kind == "started":
            self.finished = None
        elif event.kind in ("completed", "failed", "aborted", "suspended"):
            self.finished = event.kind
            self._stepping = None
            self._emit(
                "completed",
                {
                    "run_id": event.run_id,
                    "status": event.kind,
                    **{k: v for k, v in event.data.items() if v},
                },
            )

    async def on_point(self, point: ControlPoint) -> Directive | None:
        if self._stop_requested:
            self._stop_requested = False
            return Directive.abort("stopped by the debugger")
        reason: PauseReason | None = None
        stepping = self._stepping
        if self._pause_requested:
            self._pause_requested = False
            reason = PauseReason.PAUSE_REQUEST
        elif stepping is not None:
            if point.position == Position.ERROR:
                reason = PauseReason.EXCEPTION  # a step never runs past an error
            elif stepping.stops_at(point):
                reason = (PauseReason.RUN_TO if stepping.mode == StepMode.RUN_TO
                          else PauseReason.STEP)  # fmt: skip
        candidates = self.breakpoints.candidates(point.node_id)
        record = (
            self.record_history
            and point.position is not Position.STEP
            and (point.position is not Position.ERROR)
        )
        if not candidates and reason is None and not record:
            return None
        state = point_state(point)
        hits: list[str] = []
        if candidates:
            found = stops.match(self.breakpoints, point, workflow_id=self.workflow_id,
                                state=state)  # fmt: skip
            for bp, message in found.logs:
                log.info("logpoint %s at %s: %s", bp.id, point.node_id, message)
                self._emit("output", {"breakpoint_id": bp.id, "node_id": point.node_id,
                                      "run_id": point.run_id, "message": message,
                                      "step": point.step})  # fmt: skip
            for bp in found.failed:
                log.warning("breakpoint %s disabled: %s", bp.id, bp.failure)
                self._emit("breakpoint", {"breakpoint_id": bp.id, "node_id": point.node_id,
                                          "run_id": point.run_id, "enabled": False,
                                          "reason": bp.failure})  # fmt: skip
            hits = [bp.id for bp in found.hits]
        if hits:
            reason = PauseReason.BREAKPOINT
        if record and reason is None:
            snapshot = self.inspector.record(
                point.run_id, point.node_id, point.position.value, point.step, state
            )
            self._emit(
                "state_update",
                {
                    "run_id": point.run_id,
                    "node_id": point.node_id,
                    "position": point.position.value,
                    "snapshot_id": snapshot.id,
                },
            )
        if reason is None:
            return None
        return await self._hold(point, reason, hits, state)

    async def _hold(
        self, point: ControlPoint, reason: PauseReason, hits: list[str], state: dict[str, Any]
    ) -> Directive | None:
        loop = asyncio.get_running_loop()
        snapshot = self.inspector.record(
            point.run_id, point.node_id, point.position.value, point.step, state
        )
        context = PauseContext(
            run_id=point.run_id,
            node_id=point.node_id,
            class_type=point.class_type,
            position=BREAKPOINT_POSITION[point.position],
            reason=reason,
            step=point.step,
            total_steps=point.total_steps,
            breakpoint_ids=hits,
            error=None if point.error is None else f"{type(point.error).__name__}: {point.error}",
            error_type=None if point.error is None else type(point.error).__name__,
            state=snapshot.values,
            snapshot_id=snapshot.id,
            kind=point.kind,
        )
        future: asyncio.Future[tuple[Command, Any]] = loop.create_future()
        with self._lock:
            self._held = (context, future, loop)
        self.last_context = context
        if hits:
            self._emit(
                "breakpoint_hit",
                {"breakpoint_ids": hits, "node_id": point.node_id, "run_id": point.run_id},
            )
        if point.error is not None:
            self._emit(
                "exception",
                {
                    "node_id": point.node_id,
                    "run_id": point.run_id,
                    "error": context.error,
                    "error_type": context.error_type,
                },
            )
        self._emit("paused", context.to_json())
        try:
            command, target = await future
        finally:
            with self._lock:
                if self._held is not None and self._held[1] is future:
                    self._held = None
        mode = StepMode.of_command(command)
        self._stepping = None
        if mode is not None:
            goal = None
            if mode == StepMode.RUN_TO:
                node_id, _, position = str(target).partition("@")
                goal = (node_id, position or "before")
            self._stepping = Stepping(mode, context.node_id, context.position.value, goal)
        self._emit("resumed", {"run_id": point.run_id, "command": command.value})
        if command == Command.STOP:
            return Directive.abort("stopped by the debugger")
        if command == Command.SUSPEND:
            return Directive.suspend("suspended by the debugger")
        return None

    def _emit(self, event: str, data: dict[str, Any]) -> None:
        for listener in list(self.listeners):
            try:
                listener(event, data)
            except Exception:  # a listener must never break the run
                log.exception("debug listener failed on %s", event)


def _settle(future: asyncio.Future[tuple[Command, Any]], value: tuple[Command, Any]) -> None:
    if not future.done():
        future.set_result(value)
