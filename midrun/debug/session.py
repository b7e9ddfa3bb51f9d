"""DebugSession: breakpoints, stepping and inspection of runs, as one object.

session = DebugSession(DebugSessionConfig(session_id="s1", workflow_id="wf"), graph=compiled)
session.set_breakpoint(node_id="review", position=BreakpointPosition.BEFORE,
                       condition="score < 0.5")
run = asyncio.create_task(compiled.invoke(state, debug_hook=session.create_hook()))
context = await session.wait_for_pause()
await session.step_over()
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from midrun.core.errors import MidrunError
from midrun.core.ids import new_id
from midrun.debug.breakpoints import (
    Breakpoint,
    BreakpointPosition,
    BreakpointSet,
    BreakpointType,
    Condition,
)
from midrun.debug.controller import Command, ExecutionController, PauseContext
from midrun.debug.expressions import get_value
from midrun.debug.inspector import Inspector, Snapshot, StateDiff


class RunFinished(MidrunError):
    """Waited for a pause, but the run ended."""

    type = "run_finished"


@dataclass(slots=True)
class DebugSessionConfig:
    session_id: str = field(default_factory=new_id)
    workflow_id: str | None = None
    max_history: int = 200
    max_history_bytes: int = 256 * 1024 * 1024
    record_history: bool = True


def node_ids_of(graph: Any) -> list[str]:
    """Node ids of a Workflow, a StateGraph or a CompiledStateGraph."""
    inner = getattr(graph, "graph", graph)
    nodes = getattr(inner, "nodes", inner)
    return [str(n) for n in nodes]


class DebugSession:
    """One debugging session over a workflow or state graph (one run at a time)."""

    def __init__(self, config: DebugSessionConfig | None = None, *, graph: Any = None) -> None:
        self.config = config or DebugSessionConfig()
        self.breakpoints = BreakpointSet()
        self.inspector = Inspector(self.config.max_history, self.config.max_history_bytes)
        self.controller = ExecutionController(
            self.breakpoints,
            self.inspector,
            workflow_id=self.config.workflow_id,
            record_history=self.config.record_history,
        )
        if graph is not None:
            self.bind(graph)

    @property
    def session_id(self) -> str:
        return self.config.session_id

    def bind(self, graph: Any) -> None:
        """Know the graph's nodes, so breakpoints on unknown nodes are refused."""
        self.breakpoints.bind_nodes(node_ids_of(graph))

    # -- breakpoints -------------------------------------------------------------------

    def set_breakpoint(
        self,
        node_id: str | None = None,
        position: BreakpointPosition | str = BreakpointPosition.BEFORE,
        condition: Condition | None = None,
        bp_type: BreakpointType | str | None = None,
        state_key: str | None = None,
        state_value: Any = None,
        ignore_count: int = 0,
        log_message: str | None = None,
        *,
        hit_condition: str | None = None,
        step: int | None = None,
        every: int | None = None,
        exception_types: Iterable[str] = (),
        run_id: str | None = None,
        enabled: bool = True,
        watch_value: bool | None = None,
    ) -> Breakpoint:
        """Add a breakpoint (checked now: bad conditions and unknown nodes are refused)."""
        return self.breakpoints.add(
            Breakpoint.create(
                node_id=node_id,
                position=position,
                bp_type=bp_type,
                condition=condition,
                hit_condition=hit_condition,
                ignore_count=ignore_count,
                log_message=log_message,
                state_key=state_key,
                state_value=state_value,
                exception_types=exception_types,
                step=step,
                every=every,
                enabled=enabled,
                run_id=run_id,
                workflow_id=None if run_id else self.config.workflow_id,
                watch_value=watch_value,
            )
        )

    def clear_breakpoint(self, breakpoint_id: str) -> Breakpoint:
        return self.breakpoints.remove(breakpoint_id)

    def clear_breakpoints(self) -> None:
        self.breakpoints.clear()

    def list_breakpoints(self) -> list[Breakpoint]:
        return list(self.breakpoints)

    def enable_breakpoint(self, breakpoint_id: str) -> Breakpoint:
        bp = self.breakpoints.get(breakpoint_id)
        bp.enabled = True
        return bp

    def disable_breakpoint(self, breakpoint_id: str) -> Breakpoint:
        bp = self.breakpoints.get(breakpoint_id)
        bp.enabled = False
        return bp

    # -- attaching and state -----------------------------------------------------------

    def create_hook(self) -> ExecutionController:
        """The hook to pass as ``debug_hook=`` (or in ``hooks=``) to the next run."""
        self.controller.finished = None  # forget how the previous run ended
        return self.controller

    @property
    def is_paused(self) -> bool:
        return self.controller.is_paused

    def get_pause_context(self) -> PauseContext | None:
        return self.controller.context

    def get_current_state(self) -> dict[str, Any] | None:
        """The state where the run is held, else the latest snapshot's, else None."""
        context = self.controller.context
        if context is not None:
            return context.state
        latest = self.inspector.latest()
        return latest.values if latest is not None else None

    def get_value(self, path: str, default: Any = None) -> Any:
        return get_value(self.get_current_state() or {}, path, default)

    def snapshots(self) -> list[Snapshot]:
        return list(self.inspector)

    def diff(self, old_snapshot: int, new_snapshot: int) -> StateDiff:
        return self.inspector.diff(old_snapshot, new_snapshot)

    # -- commands ----------------------------------------------------------------------

    async def wait_for_pause(self, timeout: float = 10.0) -> PauseContext:
        """Until the run is held (or it ended: then TimeoutError names how)."""
        loop = asyncio.get_running_loop()
        woken = asyncio.Event()

        def listener(event: str, data: dict[str, Any]) -> None:
            if event in ("paused", "completed"):  # said on the run's thread, maybe another
                loop.call_soon_threadsafe(woken.set)

        self.controller.listeners.append(listener)
        deadline = time.monotonic() + timeout
        try:
            while True:
                woken.clear()
                context = self.controller.context
                if context is not None:
                    return context
                if self.controller.finished is not None:
                    raise RunFinished(
                        f"The run ended ({self.controller.finished}) without pausing",
                        status=self.controller.finished,
                    )
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"Run not paused within {timeout} s (finished: "
                                       f"{self.controller.finished})")  # fmt: skip
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(woken.wait(), left)
        finally:
            self.controller.listeners.remove(listener)

    async def _command(self, command: Command, target: Any = None) -> None:
        self.controller.resume(command, target)
        await asyncio.sleep(0)

    async def continue_execution(self) -> None:
        await self._command(Command.CONTINUE)

    async def step_over(self) -> None:
        await self._command(Command.STEP_OVER)

    async def step_into(self) -> None:
        await self._command(Command.STEP_INTO)

    async def step_out(self) -> None:
        await self._command(Command.STEP_OUT)

    async def run_to(self, node_id: str, position: str = "before") -> None:
        self.breakpoints._check_node(node_id)
        await self._command(Command.RUN_TO, f"{node_id}@{position}")

    async def suspend(self) -> None:
        """Release the held run so it checkpoints itself (a RunState) and returns."""
        await self._command(Command.SUSPEND)

    async def pause(self) -> None:
        """Hold the run at its next control point."""
        self.controller.request_pause()
        await asyncio.sleep(0)

    async def stop(self) -> None:
        """Abort the run (partial results kept), now if held, else at the next point."""
        self.controller.request_stop()
        await asyncio.sleep(0)
