"""The typed records of a suspended plan: what ``run.json``'s ``"plan"`` field holds.

A plan's ``encode`` returns one of these and its ``decode`` / ``restore`` reads one back.
Values inside are already in the codec's JSON form (see :mod:`midrun.engine.codec`):
decoding them needs the blobs and this process's codecs, which the plans do. ``to_json``
and ``from_json`` are exact inverses; ``from_json`` checks every field's shape and raises
:class:`~midrun.core.errors.RunStateError` naming the field (the caller adds the file).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeAlias

from midrun.core.errors import RunStateError


def _field(data: dict[str, Any], name: str, kind: type | tuple[type, ...], what: str) -> Any:
    if name not in data:
        raise RunStateError(f"plan field {name!r} is missing")
    value = data[name]
    # bool is an int in Python; a JSON true is never a step count.
    if not isinstance(value, kind) or (isinstance(value, bool) and bool not in _types(kind)):
        raise RunStateError(f"plan field {name!r} is not {what} (got {type(value).__name__})")
    return value


def _types(kind: type | tuple[type, ...]) -> tuple[type, ...]:
    return kind if isinstance(kind, tuple) else (kind,)


def _names(data: dict[str, Any], name: str) -> list[str]:
    value = _field(data, name, list, "a list of node names")
    if not all(isinstance(v, str) for v in value):
        raise RunStateError(f"plan field {name!r} is not a list of node names")
    return list(value)


def _in_flight(data: dict[str, Any]) -> dict[str, InFlightStep]:
    entries = _field(data, "in_flight", dict, "an object of node -> step entry")
    return {node: InFlightStep.from_json(node, entry) for node, entry in entries.items()}


@dataclass(slots=True)
class InFlightStep:
    """A steppable node stopped mid-run: the step it reached and its encoded step state."""

    step: int
    state: Any

    def to_json(self) -> dict[str, Any]:
        return {"step": self.step, "state": self.state}

    @classmethod
    def from_json(cls, node_id: str, data: Any) -> InFlightStep:
        if not isinstance(data, dict) or "state" not in data:
            raise RunStateError(f"plan field 'in_flight' entry {node_id!r} has no step state")
        step = data.get("step")
        if not isinstance(step, int) or isinstance(step, bool) or step < 0:
            raise RunStateError(
                f"plan field 'in_flight' entry {node_id!r} has no step count (got {step!r})"
            )
        return cls(step, data["state"])


@dataclass(slots=True)
class WorkflowCheckpoint:
    """A suspended API-workflow run (:class:`~midrun.engine.workflow_plan.WorkflowPlan`).

    ``values`` holds the encoded outputs of finished nodes that pending nodes (or the
    targets) still need; ``None`` means "could not be saved: re-run this deterministic node
    on resume". ``ui`` and ``extra_pnginfo`` are encoded too.
    """

    kind: ClassVar[str] = "workflow"

    workflow: dict[str, Any]
    targets: list[str]
    finished: list[str] = field(default_factory=list)
    values: dict[str, Any] = field(default_factory=dict)
    ui: Any = field(default_factory=dict)
    in_flight: dict[str, InFlightStep] = field(default_factory=dict)
    executed: list[str] = field(default_factory=list)
    cached: list[str] = field(default_factory=list)
    extra_pnginfo: Any = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "workflow": self.workflow,
            "targets": list(self.targets),
            "finished": list(self.finished),
            "values": dict(self.values),
            "ui": self.ui,
            "in_flight": {n: e.to_json() for n, e in self.in_flight.items()},
            "executed": list(self.executed),
            "cached": list(self.cached),
            "extra_pnginfo": self.extra_pnginfo,
        }

    @classmethod
    def from_json(cls, data: Any) -> WorkflowCheckpoint:
        if not isinstance(data, dict):
            raise RunStateError(f"plan is not an object (got {type(data).__name__})")
        workflow = _field(data, "workflow", dict, "an API-format workflow object")
        return cls(
            workflow=workflow,
            targets=_names(data, "targets"),
            finished=_names(data, "finished"),
            values=dict(_field(data, "values", dict, "an object of node -> outputs")),
            ui=_field(data, "ui", dict, "an object of node -> UI results"),
            in_flight=_in_flight(data),
            executed=_names(data, "executed"),
            cached=_names(data, "cached"),
            # Optional: absent in the earliest version-1 files.
            extra_pnginfo=data.get("extra_pnginfo") or {},
        )


@dataclass(slots=True)
class StateGraphCheckpoint:
    """A suspended StateGraph run (:class:`~midrun.engine.stategraph.StateGraphPlan`):
    the encoded shared state, the frontier of the superstep it stopped in, the updates of
    the frontier nodes that finished, and the stopped steppables."""

    kind: ClassVar[str] = "stategraph"

    state: Any
    frontier: list[str]
    recursion_limit: int
    updates: Any = field(default_factory=dict)
    in_flight: dict[str, InFlightStep] = field(default_factory=dict)
    history: list[str] = field(default_factory=list)
    iterations: int = 0
    advance_pending: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "frontier": list(self.frontier),
            "updates": self.updates,
            "in_flight": {n: e.to_json() for n, e in self.in_flight.items()},
            "history": list(self.history),
            "iterations": self.iterations,
            "advance_pending": self.advance_pending,
            "recursion_limit": self.recursion_limit,
        }

    @classmethod
    def from_json(cls, data: Any) -> StateGraphCheckpoint:
        if not isinstance(data, dict):
            raise RunStateError(f"plan is not an object (got {type(data).__name__})")
        return cls(
            state=_field(data, "state", dict, "an object (the graph's state)"),
            frontier=_names(data, "frontier"),
            recursion_limit=_field(data, "recursion_limit", int, "an integer"),
            updates=_field(data, "updates", dict, "an object of node -> update"),
            in_flight=_in_flight(data),
            history=_names(data, "history"),
            iterations=_field(data, "iterations", int, "an integer"),
            advance_pending=_field(data, "advance_pending", bool, "true or false"),
        )


Checkpoint: TypeAlias = WorkflowCheckpoint | StateGraphCheckpoint

#: kind -> checkpoint type; a run state of any other kind is refused.
CHECKPOINT_KINDS: dict[str, type[WorkflowCheckpoint] | type[StateGraphCheckpoint]] = {
    WorkflowCheckpoint.kind: WorkflowCheckpoint,
    StateGraphCheckpoint.kind: StateGraphCheckpoint,
}
