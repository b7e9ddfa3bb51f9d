"""Running a StateGraph on the executor: supersteps over a shared state dict.

Each superstep runs the current frontier (several nodes run at once when the executor
allows), merges their updates into the state in frontier order, then follows static
edges and routers to the next frontier. A node is ``fn(state) -> dict | None``, sync or
async, or a Steppable whose ``start`` receives the state. Control points see the state as
the node's inputs and the update as its output.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from midrun.core.errors import MidrunError, NodeExecutionError, RecursionLimitError, RunStateError
from midrun.core.ids import new_id
from midrun.engine.checkpoint import InFlightStep, StateGraphCheckpoint
from midrun.engine.codec import Decoder, Encoder, UnencodableValue
from midrun.engine.control import Hook
from midrun.engine.executor import Executor, RunStatus
from midrun.engine.plan import NO_STATE, Outcome, Plan, Task
from midrun.engine.runstate import RunState
from midrun.graph.stategraph import END, StateGraph
from midrun.graph.types import NodeType, OutputSpec, Steppable

UPDATE = OutputSpec("STATE_UPDATE", "update")


def _node_type(name: str, fn: Any) -> NodeType:
    """Wrap ``fn(state)`` so the executor can call it with the state as keyword inputs."""
    if isinstance(fn, Steppable):
        return NodeType(name, outputs=(UPDATE,), impl=fn, cacheable=False, module="stategraph")
    target = fn if inspect.isfunction(fn) or inspect.ismethod(fn) else getattr(fn, "__call__", fn)  # noqa: B004
    if inspect.iscoroutinefunction(target):

        async def call_async(**state: Any) -> Any:
            return await fn(state)

        impl: Callable[..., Any] = call_async
    else:

        def call(**state: Any) -> Any:
            return fn(state)

        impl = call
    return NodeType(name, outputs=(UPDATE,), impl=impl, cacheable=False, module="stategraph")


class StateGraphPlan(Plan):
    kind = "stategraph"

    def __init__(
        self,
        graph: StateGraph,
        types: Mapping[str, NodeType],
        state: dict[str, Any],
        *,
        run_id: str,
        recursion_limit: int,
    ) -> None:
        self.graph = graph
        self.types = types
        self.run_id = run_id
        self.recursion_limit = recursion_limit
        self.state: dict[str, Any] = dict(state)
        self.frontier: list[str] = [graph.entry] if graph.entry else []
        self.updates: dict[str, Any] = {}
        self.started: set[str] = set()
        self.in_flight: dict[str, tuple[int, Any]] = {}
        self.history: list[str] = []
        self.iterations = 0
        self.advance_pending = False

    async def ready(self, limit: int) -> list[Task]:
        if self.advance_pending:
            await self._advance()
        tasks: list[Task] = []
        for name in self.frontier:
            if len(tasks) >= limit:
                break
            if name in self.updates or name in self.started:
                continue
            self.started.add(name)
            task = Task(name, name, self.types[name], dict(self.state))
            if name in self.in_flight:
                task.resume_step, task.resume_state = self.in_flight.pop(name)
            tasks.append(task)
        return tasks

    def complete(self, task: Task, outputs: tuple[Any, ...], ui: dict[str, Any] | None) -> None:
        update = outputs[0]
        if update is not None and not isinstance(update, Mapping):
            raise NodeExecutionError(
                task.node_id,
                task.class_type,
                TypeError(f"a node must return a dict update or None, got {type(update).__name__}"),
            )
        self.started.discard(task.node_id)
        self.updates[task.node_id] = dict(update or {})
        if all(name in self.updates for name in self.frontier):
            for name in self.frontier:
                self.state.update(self.updates[name])
                self.history.append(name)
            self.iterations += 1
            self.advance_pending = True

    async def _advance(self) -> None:
        self.advance_pending = False
        following: list[str] = []
        for name in self.frontier:
            edge = self.graph.conditional.get(name)
            if edge is not None:
                try:
                    choice = edge.router(dict(self.state))
                    if inspect.isawaitable(choice):
                        choice = await choice
                    targets = edge.targets(choice)
                except MidrunError:
                    raise
                except Exception as exc:
                    raise NodeExecutionError(name, "router", exc) from exc
            else:
                targets = self.graph.edges.get(name, [END])
            for target in targets:
                if target != END and target not in following:
                    if target not in self.graph.nodes:
                        raise NodeExecutionError(
                            name, "router", KeyError(f"route to unknown node {target!r}")
                        )
                    following.append(target)
        self.frontier = following
        self.updates = {}
        if following and self.iterations >= self.recursion_limit:
            raise RecursionLimitError(
                f"Recursion limit of {self.recursion_limit} supersteps reached without "
                f"hitting END (next: {', '.join(following)}); raise recursion_limit if the "
                "loop is intended",
                recursion_limit=self.recursion_limit,
                node_history=list(self.history[-10:]),
            )

    def stopped(self, task: Task, outcome: Outcome) -> None:
        self.started.discard(task.node_id)
        if outcome.step_state is not NO_STATE:
            self.in_flight[task.node_id] = (outcome.step, outcome.step_state)

    async def settle(self) -> None:
        # Stopped right after a superstep: route now, so a run whose last node leads to
        # END is complete rather than suspended with nothing left to do.
        if self.advance_pending:
            await self._advance()

    def is_done(self) -> bool:
        return not self.frontier

    def encode(self, encoder: Encoder) -> StateGraphCheckpoint:
        try:
            return StateGraphCheckpoint(
                state=encoder.encode(self.state),
                frontier=list(self.frontier),
                recursion_limit=self.recursion_limit,
                updates=encoder.encode(self.updates),
                in_flight={
                    n: InFlightStep(s, encoder.encode(st))
                    for n, (s, st) in self.in_flight.items()
                },
                history=list(self.history),
                iterations=self.iterations,
                advance_pending=self.advance_pending,
            )
        except UnencodableValue as exc:
            raise RunStateError(
                f"Cannot suspend the graph: its state is not serialisable ({exc})"
            ) from exc

    def restore(self, data: StateGraphCheckpoint, decoder: Decoder) -> None:
        unknown = [n for n in data.frontier if n not in self.graph.nodes]
        if unknown:
            raise RunStateError(f"Saved run names nodes this graph does not have: {unknown}")
        self.state = decoder.decode(data.state)
        self.frontier = list(data.frontier)
        self.updates = decoder.decode(data.updates)
        self.in_flight = {n: (e.step, decoder.decode(e.state)) for n, e in data.in_flight.items()}
        self.history = list(data.history)
        self.iterations = data.iterations
        self.advance_pending = data.advance_pending


@dataclass(slots=True)
class GraphRunResult:
    """What ``invoke`` returns."""

    state: dict[str, Any]
    success: bool
    node_history: list[str]
    iterations: int
    duration: float
    status: RunStatus = RunStatus.COMPLETED
    error: MidrunError | None = None
    run_id: str = ""
    run_state: RunState | None = None
    reason: str = ""


class CompiledStateGraph:
    """A checked StateGraph, ready to run any number of times."""

    def __init__(
        self, graph: StateGraph, *, recursion_limit: int = 25, name: str = "state_graph"
    ) -> None:
        self.graph = graph
        self.recursion_limit = recursion_limit
        self.name = name
        self.types = {n: _node_type(n, fn) for n, fn in graph.nodes.items()}

    def _plan(
        self, state: Mapping[str, Any], run_id: str, recursion_limit: int | None
    ) -> StateGraphPlan:
        return StateGraphPlan(
            self.graph,
            self.types,
            dict(state),
            run_id=run_id,
            recursion_limit=recursion_limit or self.recursion_limit,
        )

    async def invoke(
        self,
        state: Mapping[str, Any] | None = None,
        *,
        hooks: Sequence[Hook] = (),
        debug_hook: Hook | None = None,
        recursion_limit: int | None = None,
        max_concurrency: int = 1,
        run_id: str | None = None,
    ) -> GraphRunResult:
        """Run from the entry point until END. Node errors end the run with
        ``success=False`` and ``error`` naming the node."""
        plan = self._plan(state or {}, run_id or new_id(), recursion_limit)
        return await self._drive(plan, hooks, debug_hook, max_concurrency)

    async def resume(
        self,
        run_state: RunState,
        *,
        hooks: Sequence[Hook] = (),
        debug_hook: Hook | None = None,
        max_concurrency: int = 1,
    ) -> GraphRunResult:
        """Continue a suspended run of this graph (in this or another process)."""
        if run_state.kind != StateGraphPlan.kind:
            raise RunStateError(f"Run state is a {run_state.kind!r} run, not a state graph run")
        saved = run_state.stategraph_checkpoint()
        plan = self._plan({}, run_state.run_id, saved.recursion_limit)
        plan.restore(saved, Decoder(run_state.blobs))
        return await self._drive(plan, hooks, debug_hook, max_concurrency)

    async def _drive(
        self,
        plan: StateGraphPlan,
        hooks: Sequence[Hook],
        debug_hook: Hook | None,
        max_concurrency: int,
    ) -> GraphRunResult:
        started = time.perf_counter()
        all_hooks = [*hooks, *([debug_hook] if debug_hook is not None else [])]
        result = await Executor(hooks=all_hooks, max_concurrency=max_concurrency).run_plan(plan)
        return GraphRunResult(
            state=plan.state,
            success=result.status == RunStatus.COMPLETED,
            node_history=list(plan.history),
            iterations=plan.iterations,
            duration=time.perf_counter() - started,
            status=result.status,
            error=result.error,
            run_id=plan.run_id,
            run_state=result.state,
            reason=result.reason,
        )
