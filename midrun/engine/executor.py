"""The executor: one control loop for every kind of run.

It asks a :class:`~midrun.engine.plan.Plan` for ready tasks, runs them (up to
``max_concurrency`` at once) and stops at control points: before and after every node,
after every step of a steppable node, and on errors. With no hooks attached a control
point costs one boolean test. The loop of a steppable node lives here, not in the node.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from functools import partial
from typing import Any

from midrun.core.errors import MidrunError, NodeExecutionError, RunStateError
from midrun.core.ids import new_id
from midrun.engine.cache import OutputCache
from midrun.engine.codec import Decoder, Encoder, UnencodableValue
from midrun.engine.control import Action, ControlPoint, Directive, Hook, Position, RunEvent
from midrun.engine.plan import NO_STATE, Outcome, Plan, Task
from midrun.engine.runstate import RunState
from midrun.engine.workflow_plan import RunContext, WorkflowPlan
from midrun.graph.registry import NodeRegistry
from midrun.graph.types import normalise_outputs
from midrun.graph.validation import validate
from midrun.graph.workflow import Workflow

log = logging.getLogger(__name__)


class RunStatus(StrEnum):
    COMPLETED = "completed"
    SUSPENDED = "suspended"
    ABORTED = "aborted"
    FAILED = "failed"


class HookError(MidrunError):
    """A hook attached to the run raised; the run ends failed (nodes are not to blame)."""

    type = "hook_error"


class WorkflowInvalidError(MidrunError):
    """The workflow did not validate; ``extra_info`` holds ComfyUI's error and node_errors."""

    type = "prompt_outputs_failed_validation"

    @classmethod
    def of(cls, checked: Any) -> WorkflowInvalidError:
        """The error for a failed :func:`validate` result, typed as its top-level error."""
        error = checked.error
        invalid = cls(
            error.message if error else "Prompt outputs failed validation",
            details=error.details if error else "",
            error=error.to_dict() if error else None,
            node_errors=checked.node_errors,
        )
        if error is not None:
            invalid.type = error.type
        return invalid


@dataclass(slots=True)
class RunResult:
    """How a run ended. ``state`` is set when suspended (and, for inspection, when aborted)."""

    run_id: str
    status: RunStatus
    plan: Plan
    reason: str = ""
    error: MidrunError | None = None
    state: RunState | None = None
    duration: float = 0.0
    in_flight: dict[str, tuple[int, Any]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status == RunStatus.COMPLETED


class _Run:
    """Per-run mutable state shared by the run's tasks."""

    __slots__ = ("hooks", "kind", "offload", "plan", "run_id", "stop")

    def __init__(self, plan: Plan, hooks: Sequence[Hook], offload: bool) -> None:
        self.plan = plan
        self.run_id = plan.run_id
        self.kind = plan.kind
        self.hooks = tuple(hooks)
        self.offload = offload
        self.stop: Directive | None = None

    async def point(self, position: Position, task: Task, **fields: Any) -> Directive | None:
        if self.stop is not None:
            return self.stop
        point = ControlPoint(
            self.run_id,
            position,
            task.node_id,
            task.class_type,
            task.inputs,
            kind=self.kind,
            **fields,
        )
        for hook in self.hooks:
            directive = await hook.on_point(point)
            if directive is not None and directive.action != Action.CONTINUE:
                self.stop = directive
                return directive
        return None

    def checkpoint(self, task: Task | None, step: int = 0, state: Any = None) -> RunState:
        """The run as it stands, with ``task`` (if given) at ``step``; it keeps running."""
        encoder = Encoder()
        try:
            encoded = self.plan.snapshot(encoder, task, step, state)
        except UnencodableValue as exc:
            raise RunStateError(f"Cannot checkpoint the run's state: {exc}") from exc
        return RunState(self.kind, self.run_id, encoded, encoder.blobs, "checkpoint")

    async def event(self, kind: str, **data: Any) -> None:
        """Tell every hook; events are notifications, so a hook that fails here is
        logged and the others still hear it."""
        event = RunEvent(kind, self.run_id, data)
        for hook in self.hooks:
            try:
                await hook.on_event(event)
            except Exception:
                log.exception("Hook %r failed on run event %r", hook, kind)

    def fail(self) -> None:
        """A task failed: the run's other tasks stop at their next control point."""
        if self.stop is None:
            self.stop = Directive.abort("another node failed")

    async def call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        if self.offload:
            return await asyncio.to_thread(fn, *args, **kwargs)
        return fn(*args, **kwargs)


class Executor:
    """Runs plans. ``max_concurrency > 1`` runs independent ready nodes at once (sync
    node code then runs in worker threads); hooks are asked at every control point."""

    def __init__(self, *, hooks: Sequence[Hook] = (), max_concurrency: int = 1) -> None:
        if max_concurrency < 1:
            raise ValueError("max_concurrency must be >= 1")
        self.hooks = list(hooks)
        self.max_concurrency = max_concurrency

    async def run(
        self,
        workflow: Workflow,
        registry: NodeRegistry,
        *,
        targets: Sequence[str] | None = None,
        cache: OutputCache | None = None,
        context: RunContext | None = None,
        run_id: str | None = None,
    ) -> RunResult:
        """Validate and run an API-format workflow (only outputs and their ancestors)."""
        checked = validate(workflow, registry, targets)
        if not checked.ok:
            raise WorkflowInvalidError.of(checked)
        run_id = run_id or new_id()
        plan = WorkflowPlan(
            checked.workflow, registry, checked.outputs, run_id=run_id, cache=cache, context=context
        )
        return await self.run_plan(plan)

    async def resume(
        self,
        state: RunState,
        registry: NodeRegistry,
        *,
        cache: OutputCache | None = None,
        context: RunContext | None = None,
    ) -> RunResult:
        """Continue a suspended workflow run (in this or any other process)."""
        if state.kind != WorkflowPlan.kind:
            raise RunStateError(
                f"Run state {state.run_id} is a {state.kind} run, not a workflow run; "
                "resume it with the code that started it"
                + (" (CompiledStateGraph.resume)" if state.kind == "stategraph" else ""),
                kind=state.kind,
            )
        plan = WorkflowPlan.decode(
            state.workflow_checkpoint(),
            Decoder(state.blobs),
            registry,
            run_id=state.run_id,
            cache=cache,
            context=context,
        )
        return await self.run_plan(plan)

    async def run_plan(self, plan: Plan) -> RunResult:
        """The control loop."""
        started = time.perf_counter()
        run = _Run(plan, self.hooks, offload=self.max_concurrency > 1)
        if run.hooks:
            await run.event("started")
            cached = getattr(plan, "cached", None)
            if cached:
                await run.event("cached", nodes=list(cached))
        running: dict[asyncio.Future[Outcome], Task] = {}
        error: MidrunError | None = None
        try:
            while True:
                if run.stop is None and error is None:
                    room = self.max_concurrency - len(running)
                    if room > 0:
                        try:
                            tasks = await plan.ready(room)
                        except MidrunError as exc:
                            error, tasks = exc, []
                            run.fail()
                        for task in tasks:
                            running[asyncio.ensure_future(self._run_task(run, task))] = task
                if not running:
                    break
                done, _ = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
                for future in done:
                    task = running.pop(future)
                    try:
                        outcome = future.result()
                    except MidrunError as exc:
                        error = error or exc
                        run.fail()
                        plan.stopped(task, Outcome(finished=False))
                        continue
                    except Exception as exc:  # a hook (not a node) raised
                        run.fail()
                        error = error or HookError(
                            f"A hook failed at node {task.node_id} ({task.class_type}): "
                            f"{type(exc).__name__}: {exc}",
                            node_id=task.node_id,
                            exception_type=type(exc).__name__,
                        )
                        plan.stopped(task, Outcome(finished=False))
                        continue
                    try:
                        if outcome.finished:
                            plan.complete(task, outcome.outputs, outcome.ui)
                            if run.hooks:
                                await run.event("executed", node_id=task.node_id,
                                                class_type=task.class_type, ui=outcome.ui)
                        else:
                            plan.stopped(task, outcome)
                    except MidrunError as exc:
                        error = error or exc
                        run.fail()
        finally:
            for future in running:
                future.cancel()
        return await self._finish(run, plan, error, time.perf_counter() - started)

    async def _finish(
        self, run: _Run, plan: Plan, error: MidrunError | None, duration: float
    ) -> RunResult:
        if error is None and run.stop is not None:
            try:
                await plan.settle()
            except MidrunError as exc:
                error = exc
        if error is not None:
            result = RunResult(run.run_id, RunStatus.FAILED, plan, error=error, duration=duration)
        elif run.stop is not None and not plan.is_done():
            status = RunStatus.SUSPENDED if run.stop.action == Action.SUSPEND else RunStatus.ABORTED
            state, state_error = self._checkpoint(run, plan)
            if state_error is not None and status == RunStatus.SUSPENDED:
                # Nothing to resume from: the pause cannot be honoured, the run fails.
                error = state_error
                result = RunResult(
                    run.run_id, RunStatus.FAILED, plan, error=error, duration=duration
                )
            else:
                # An abort keeps what it can; a state that cannot be saved is just absent.
                result = RunResult(
                    run.run_id,
                    status,
                    plan,
                    reason=run.stop.reason,
                    state=state,
                    duration=duration,
                    in_flight=dict(getattr(plan, "in_flight", {})),
                )
        else:
            result = RunResult(run.run_id, RunStatus.COMPLETED, plan, duration=duration)
        if run.hooks:
            await run.event(
                result.status.value,
                reason=result.reason,
                error=error.to_dict() if error else None,
            )
        return result

    @staticmethod
    def _checkpoint(run: _Run, plan: Plan) -> tuple[RunState | None, MidrunError | None]:
        assert run.stop is not None
        encoder = Encoder()
        try:
            encoded = plan.encode(encoder)
        except RunStateError as exc:
            return None, exc
        except UnencodableValue as exc:
            return None, RunStateError(f"Cannot save the run's state: {exc}")
        return RunState(plan.kind, run.run_id, encoded, encoder.blobs, run.stop.reason), None

    async def _run_task(self, run: _Run, task: Task) -> Outcome:
        node_type = task.node_type
        hooks = run.hooks
        if hooks and not task.resuming:
            directive = await run.point(
                Position.BEFORE, task, checkpoint=partial(run.checkpoint, None)
            )
            if directive is not None:
                return Outcome(finished=False, directive=directive)
        if node_type.steppable:
            outcome = await self._run_steps(run, task)
            if not outcome.finished:
                return outcome
        else:
            try:
                if node_type.is_async:
                    value = await node_type.impl(**task.inputs)  # type: ignore[misc]
                else:
                    value = await run.call(node_type.impl, **task.inputs)  # type: ignore[arg-type]
                outputs, ui = normalise_outputs(task.class_type, value, len(node_type.outputs))
            except Exception as exc:
                return await self._failed(run, task, exc, NO_STATE, 0)
            outcome = Outcome(finished=True, outputs=outputs, ui=ui)
        if hooks:
            outcome.directive = await run.point(Position.AFTER, task, outputs=outcome.outputs)
        return outcome

    async def _run_steps(self, run: _Run, task: Task) -> Outcome:
        impl: Any = task.node_type.impl
        step = task.resume_step
        state = task.resume_state
        try:
            if not task.resuming:
                state = await run.call(impl.start, dict(task.inputs))
            elif hasattr(impl, "resume"):
                state = await run.call(impl.resume, state, dict(task.inputs))
        except Exception as exc:
            return await self._failed(run, task, exc, NO_STATE, 0)
        done, advance = impl.done, impl.step
        if not run.hooks and not run.offload:
            # Nothing attached: the bare loop.
            try:
                while not done(state):
                    state = advance(state)
                    step += 1
            except Exception as exc:
                return await self._failed(run, task, exc, state, step)
        else:
            offload, hooked = run.offload, bool(run.hooks)
            totals = getattr(impl, "total_steps", None)
            while not done(state):
                if run.stop is not None:  # another task failed or the run was stopped
                    return Outcome(False, directive=run.stop, step=step, step_state=state)
                try:
                    state = await asyncio.to_thread(advance, state) if offload else advance(state)
                except Exception as exc:
                    return await self._failed(run, task, exc, state, step)
                step += 1
                if hooked:
                    directive = await run.point(
                        Position.STEP,
                        task,
                        step=step,
                        total_steps=totals(state) if totals is not None else None,
                        step_state=state,
                        checkpoint=partial(run.checkpoint, task, step, state),
                    )
                    if directive is not None:
                        return Outcome(False, directive=directive, step=step, step_state=state)
        try:
            value = await run.call(impl.finish, state)
            outputs, ui = normalise_outputs(task.class_type, value, len(task.node_type.outputs))
        except Exception as exc:
            return await self._failed(run, task, exc, state, step)
        return Outcome(finished=True, outputs=outputs, ui=ui)

    async def _failed(
        self, run: _Run, task: Task, exc: Exception, state: Any, step: int
    ) -> Outcome:
        """A node raised: hooks may suspend there (to retry later) or abort; else it fails.

        Once the run is already stopping (another node failed, a pause arrived) the error
        is reported, not folded into that stop."""
        if run.hooks and run.stop is None:
            directive = await run.point(
                Position.ERROR,
                task,
                error=exc,
                step=step,
                step_state=None if state is NO_STATE else state,
            )
            if directive is not None:
                return Outcome(False, directive=directive, step=step, step_state=state)
        if isinstance(exc, MidrunError):
            # A node reporting a structured error keeps its type; say where it happened.
            exc.extra_info.setdefault("node_id", task.node_id)
            exc.extra_info.setdefault("class_type", task.class_type)
            raise exc
        raise NodeExecutionError(task.node_id, task.class_type, exc) from exc
