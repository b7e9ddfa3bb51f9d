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
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from midrun.core.errors import MidrunError
from midrun.debug.breakpoints import BreakpointPosition, BreakpointSet
from midrun.debug.inspector import Inspector, summarise
from midrun.engine.control import ControlPoint, Directive, Hook, Position, RunEvent

log = logging.getLogger("midrun.debug")

Listener = Callable[[str, dict[str, Any]], None]

_BP_POSITION = {
    Position.BEFORE: "before",
    Position.AFTER: "after",
    Position.STEP: "step",
    Position.ERROR: "on_error",
}


class PauseReason(StrEnum):
    BREAKPOINT = "breakpoint"
    STEP = "step"
    PAUSE_REQUEST = "pause"
    EXCEPTION = "exception"
    RUN_TO = "run_to"


class Command(StrEnum):
    CONTINUE = "continue"
    STEP_OVER = "step_over"
    STEP_INTO = "step_into"
    STEP_OUT = "step_out"
    RUN_TO = "run_to"
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
        position=_BP_POSITION[point.position],
        step=point.step,
        total_steps=point.total_steps,
        error=point.error,
        step_state=point.step_state,
        outputs=list(point.outputs) if point.outputs is not None else None,
        update=point.outputs[0] if point.kind == "stategraph" and point.outputs else None,
    )
    return names


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
        self._mode = Command.CONTINUE
        self._origin: PauseContext | None = None
        self._target: tuple[str, str] | None = None
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
            self._mode, self._origin, self._target = Command.CONTINUE, None, None
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
        if self._pause_requested:
            self._pause_requested = False
            reason = PauseReason.PAUSE_REQUEST
        elif self._mode != Command.CONTINUE:
            reason = self._stepping(point)
        candidates = self.breakpoints.candidates(point.node_id)
        record = (
            self.record_history
            and point.position is not Position.STEP
            and (point.position is not Position.ERROR)
        )
        if not candidates and reason is None and not record:
            return None
        state = point_state(point)
        hits = self._breakpoints(point, candidates, state) if candidates else []
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
        if point.position == Position.ERROR and reason == PauseReason.STEP:
            reason = PauseReason.EXCEPTION
        return await self._hold(point, reason, hits, state)

    def _breakpoints(
        self, point: ControlPoint, candidates: list[Any], state: dict[str, Any]
    ) -> list[str]:
        position = _BP_POSITION[point.position]
        hits: list[str] = []
        names: dict[str, Any] | None = None
        for bp in candidates:
            if not bp.enabled or not bp.position_matches(position, point.step):
                continue
            if bp.run_id is not None and bp.run_id != point.run_id:
                continue
            if bp.workflow_id is not None and bp.workflow_id != self.workflow_id:
                continue
            if names is None:
                names = condition_names(point, state)
            if not bp.check(names, point.run_id):
                continue
            if bp.is_logpoint:
                message = bp.message(names)
                log.info("logpoint %s at %s: %s", bp.id, point.node_id, message)
                self._emit(
                    "output",
                    {
                        "breakpoint_id": bp.id,
                        "node_id": point.node_id,
                        "run_id": point.run_id,
                        "message": message,
                        "step": point.step,
                    },
                )
            else:
                hits.append(bp.id)
        return hits

    def _stepping(self, point: ControlPoint) -> PauseReason | None:
        mode, origin = self._mode, self._origin
        if point.position == Position.ERROR:
            return PauseReason.EXCEPTION
        if mode == Command.STEP_INTO:
            return PauseReason.STEP
        if mode == Command.STEP_OVER:
            return PauseReason.STEP if point.position == Position.BEFORE else None
        if mode == Command.RUN_TO and self._target is not None:
            node_id, position = self._target
            if point.node_id == node_id and point.position.value == position:
                return PauseReason.RUN_TO
            return None
        if mode == Command.STEP_OUT and origin is not None:
            if origin.position in (BreakpointPosition.BEFORE, BreakpointPosition.STEP):
                same = point.node_id == origin.node_id and point.position == Position.AFTER
                return PauseReason.STEP if same else None
            if ":" in origin.node_id:
                prefix = origin.node_id.rsplit(":", 1)[0] + ":"
                return None if point.node_id.startswith(prefix) else PauseReason.STEP
            return PauseReason.STEP if point.position == Position.BEFORE else None
        return None

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
            position=BreakpointPosition(_BP_POSITION[point.position]),
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
        self._mode, self._origin = command, context
        self._target = None
        if command == Command.RUN_TO:
            node_id, _, position = str(target).partition("@")
            self._target = (node_id, position or "before")
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
