"""The plan for an API-format workflow: a DAG of the output nodes' ancestry, with caching."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from midrun.core.errors import NodeNotImplementedError, RunStateError
from midrun.engine.cache import CacheEntry, OutputCache, node_key
from midrun.engine.checkpoint import InFlightStep, WorkflowCheckpoint
from midrun.engine.codec import Decoder, Encoder, UnencodableValue
from midrun.engine.plan import NO_STATE, Outcome, Plan, Task
from midrun.graph.registry import NodeRegistry
from midrun.graph.types import (
    HIDDEN_EXTRA_PNGINFO,
    HIDDEN_PROMPT,
    HIDDEN_RUN_CONTEXT,
    HIDDEN_UNIQUE_ID,
)
from midrun.graph.workflow import Workflow, as_link


@dataclass(slots=True)
class RunContext:
    """What nodes may ask for through the hidden ``RUN_CONTEXT`` input."""

    run_id: str = ""
    output_dir: Path = field(default_factory=lambda: Path("output"))
    extra_pnginfo: dict[str, Any] = field(default_factory=dict)
    # Where an image for the client goes (SaveImageWebsocket): ``send_image(index,
    # total, png)`` from the node running; None outside a job (the image is dropped).
    send_image: Callable[[int, int, bytes], None] | None = None


_PER_RUN_HIDDEN = frozenset({HIDDEN_PROMPT, HIDDEN_EXTRA_PNGINFO, HIDDEN_RUN_CONTEXT})


class WorkflowPlan(Plan):
    """Runs the ancestry of ``targets``; nodes whose cache key is cached are not run."""

    kind = "workflow"

    def __init__(
        self,
        workflow: Workflow,
        registry: NodeRegistry,
        targets: Sequence[str],
        *,
        run_id: str,
        cache: OutputCache | None = None,
        context: RunContext | None = None,
        check_implemented: bool = True,
    ) -> None:
        self.workflow = workflow
        self.registry = registry
        self.targets = list(targets)
        self.run_id = run_id
        self.cache = cache
        # The caller's context is a template: each run gets its own copy.
        self.context = replace(context, run_id=run_id) if context else RunContext(run_id=run_id)
        self.prompt = workflow.to_api()
        # Ready nodes start in document order, as a canvas user laid them out.
        position = {node_id: i for i, node_id in enumerate(workflow.nodes)}
        self.needed = sorted(workflow.ancestors(self.targets), key=position.__getitem__)
        self.deps: dict[str, set[str]] = {
            n: {link.node_id for _, link in workflow[n].links()} for n in self.needed
        }
        self.consumers: dict[str, set[str]] = {n: set() for n in self.needed}
        for node_id, deps in self.deps.items():
            for dep in deps:
                self.consumers[dep].add(node_id)
        self.keys = self._keys()
        self.values: dict[str, tuple[Any, ...]] = {}
        self.ui: dict[str, dict[str, Any]] = {}
        self.finished: set[str] = set()
        self.started: set[str] = set()
        self.executed: list[str] = []
        self.cached: list[str] = []
        self.in_flight: dict[str, tuple[int, Any]] = {}
        self._take_from_cache()
        if check_implemented:
            self._check_implemented()

    def _keys(self) -> dict[str, str]:
        keys: dict[str, str] = {}
        for node_id in reversed(self.needed):
            self._key(node_id, keys)
        return keys

    def _key(self, node_id: str, keys: dict[str, str]) -> str:
        stack = [node_id]
        while stack:
            current = stack[-1]
            if current in keys:
                stack.pop()
                continue
            missing = [d for d in self.deps[current] if d not in keys]
            if missing:
                stack.extend(missing)
                continue
            spec = self.workflow[current]
            node_type = self.registry[spec.class_type]
            literals: dict[str, Any] = {}
            links: dict[str, tuple[str, int]] = {}
            for name, value in spec.inputs.items():
                link = as_link(value)
                if link is not None:
                    links[name] = (keys[link.node_id], link.output)
                else:
                    literals[name] = value
            hidden = {i.type for i in node_type.inputs if i.section == "hidden"}
            if not node_type.cacheable or hidden & _PER_RUN_HIDDEN:
                # Its result depends on the run (the prompt, the output folder...).
                literals["$run"] = self.run_id
            elif HIDDEN_UNIQUE_ID in hidden:
                literals["$node"] = current
            keys[current] = node_key(spec.class_type, literals, links)
            stack.pop()
        return keys[node_id]

    def _take_from_cache(self) -> None:
        """Nodes whose outputs are cached are finished before anything runs."""
        if self.cache is None:
            return
        for node_id in self.needed:
            entry = self.cache.get(self.keys[node_id])
            if entry is not None:
                self.values[node_id] = entry.outputs
                if entry.ui is not None:
                    self.ui[node_id] = entry.ui
                self.finished.add(node_id)
                self.cached.append(node_id)
        self._drop_unneeded()
        self._prune_unneeded_cached()

    def _drop_unneeded(self) -> None:
        """Only what unfinished targets still need runs: an ancestor whose consumers were
        all found in the cache (though it was evicted itself) is left alone."""
        required: set[str] = set()
        stack = [t for t in self.targets if t not in self.finished]
        while stack:
            node_id = stack.pop()
            if node_id in required:
                continue
            required.add(node_id)
            stack.extend(d for d in self.deps[node_id] if d not in self.finished)
        self.needed = [n for n in self.needed if n in self.finished or n in required]
        kept = set(self.needed)
        self.deps = {n: self.deps[n] for n in self.needed}
        self.consumers = {n: {c for c in self.consumers[n] if c in kept} for n in self.needed}

    def _prune_unneeded_cached(self) -> None:
        # A cached node whose every consumer is also finished need not hold its value.
        for node_id in list(self.values):
            if node_id not in self.targets and all(
                c in self.finished for c in self.consumers[node_id]
            ):
                del self.values[node_id]

    def _check_implemented(self) -> None:
        missing = sorted(
            {
                self.workflow[n].class_type
                for n in self.needed
                if n not in self.finished
                and self.registry[self.workflow[n].class_type].impl is None
            }
        )
        if missing:
            raise NodeNotImplementedError(
                f"Node types declared but not runnable in this install: {', '.join(missing)}",
                class_types=missing,
            )

    async def ready(self, limit: int) -> list[Task]:
        tasks: list[Task] = []
        for node_id in self.needed:
            if len(tasks) >= limit:
                break
            if node_id in self.finished or node_id in self.started:
                continue
            if all(d in self.finished for d in self.deps[node_id]):
                self.started.add(node_id)
                tasks.append(self._task(node_id))
        return tasks

    def _task(self, node_id: str) -> Task:
        spec = self.workflow[node_id]
        node_type = self.registry[spec.class_type]
        inputs: dict[str, Any] = {}
        for input_spec in node_type.inputs:
            if input_spec.section == "hidden":
                inputs[input_spec.name] = self._hidden(input_spec.type, node_id)
                continue
            if input_spec.name not in spec.inputs:
                continue
            value = spec.inputs[input_spec.name]
            link = as_link(value)
            inputs[input_spec.name] = (
                self.values[link.node_id][link.output] if link is not None else value
            )
        task = Task(node_id, spec.class_type, node_type, inputs)
        if node_id in self.in_flight:
            task.resume_step, task.resume_state = self.in_flight.pop(node_id)
        return task

    def _hidden(self, type_name: str, node_id: str) -> Any:
        if type_name == HIDDEN_PROMPT:
            return self.prompt
        if type_name == HIDDEN_UNIQUE_ID:
            return node_id
        if type_name == HIDDEN_EXTRA_PNGINFO:
            return self.context.extra_pnginfo
        if type_name == HIDDEN_RUN_CONTEXT:
            return self.context
        return None

    def complete(self, task: Task, outputs: tuple[Any, ...], ui: dict[str, Any] | None) -> None:
        node_id = task.node_id
        self.values[node_id] = outputs
        if ui is not None:
            self.ui[node_id] = ui
        self.finished.add(node_id)
        self.started.discard(node_id)
        self.executed.append(node_id)
        if self.cache is not None:
            self.cache.put(self.keys[node_id], CacheEntry(outputs, ui))
        for dep in self.deps[node_id]:
            if dep not in self.targets and all(c in self.finished for c in self.consumers[dep]):
                self.values.pop(dep, None)

    def stopped(self, task: Task, outcome: Outcome) -> None:
        self.started.discard(task.node_id)
        if outcome.step_state is not NO_STATE:
            self.in_flight[task.node_id] = (outcome.step, outcome.step_state)

    def is_done(self) -> bool:
        return len(self.finished) == len(self.needed)

    def target_values(self) -> dict[str, tuple[Any, ...]]:
        return {t: self.values[t] for t in self.targets if t in self.values}

    def encode(self, encoder: Encoder) -> WorkflowCheckpoint:
        values: dict[str, Any] = {}
        for node_id, outputs in self.values.items():
            try:
                values[node_id] = encoder.encode(outputs)
            except UnencodableValue:
                values[node_id] = None  # deterministic: re-run on resume
        in_flight: dict[str, InFlightStep] = {}
        for node_id, (step, state) in self.in_flight.items():
            try:
                in_flight[node_id] = InFlightStep(step, encoder.encode(state))
            except UnencodableValue as exc:
                raise RunStateError(
                    f"Cannot suspend node {node_id} ({self.workflow[node_id].class_type}): "
                    f"its step state is not serialisable ({exc})",
                    node_id=node_id,
                ) from exc
        try:
            ui = encoder.encode(self.ui)
            extra_pnginfo = encoder.encode(self.context.extra_pnginfo)
        except UnencodableValue as exc:
            raise RunStateError(f"Cannot suspend run {self.run_id}: {exc}") from exc
        return WorkflowCheckpoint(
            workflow=self.prompt,
            targets=list(self.targets),
            finished=sorted(self.finished),
            values=values,
            ui=ui,
            in_flight=in_flight,
            executed=list(self.executed),
            cached=list(self.cached),
            extra_pnginfo=extra_pnginfo,
        )

    @classmethod
    def decode(
        cls,
        data: WorkflowCheckpoint,
        decoder: Decoder,
        registry: NodeRegistry,
        *,
        run_id: str,
        cache: OutputCache | None = None,
        context: RunContext | None = None,
    ) -> WorkflowPlan:
        workflow = Workflow.from_api(data.workflow)
        unknown = sorted(
            {s.class_type for s in workflow.nodes.values() if s.class_type not in registry}
        )
        if unknown:
            raise RunStateError(
                f"Saved run uses node types this process does not have: {', '.join(unknown)}",
                class_types=unknown,
            )
        context = replace(
            context or RunContext(), extra_pnginfo=decoder.decode(data.extra_pnginfo or {})
        )
        plan = cls(
            workflow,
            registry,
            data.targets,
            run_id=run_id,
            cache=None,
            context=context,
            check_implemented=False,
        )
        plan.cache = cache
        values = {n: decoder.decode(v) for n, v in data.values.items() if v is not None}
        recompute = {n for n, v in data.values.items() if v is None}
        finished = set(data.finished)
        # A value that could not be saved is recomputed, and so is anything it needs
        # whose own value is gone.
        stack = list(recompute)
        while stack:
            node_id = stack.pop()
            finished.discard(node_id)
            for dep in plan.deps[node_id]:
                if dep not in values and dep not in recompute:
                    recompute.add(dep)
                    stack.append(dep)
        plan.values = values
        plan.finished = finished
        plan.ui = decoder.decode(data.ui)
        plan.executed = list(data.executed)
        plan.cached = list(data.cached)
        plan.in_flight = {
            n: (entry.step, decoder.decode(entry.state)) for n, entry in data.in_flight.items()
        }
        plan._check_implemented()
        return plan
