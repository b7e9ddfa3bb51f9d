"""What the executor drives: a :class:`Plan` hands out ready :class:`Task` objects and
takes back their outcomes. A workflow DAG and a StateGraph are two plans on one loop."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

from midrun.engine.checkpoint import Checkpoint
from midrun.engine.codec import Encoder
from midrun.engine.control import Directive
from midrun.graph.types import NodeType

NO_STATE: Any = object()


@dataclass(slots=True)
class Task:
    """One node execution: its type, resolved inputs and, when resuming, where it was."""

    node_id: str
    class_type: str
    node_type: NodeType
    inputs: dict[str, Any]
    resume_step: int = 0
    resume_state: Any = NO_STATE

    @property
    def resuming(self) -> bool:
        return self.resume_state is not NO_STATE


@dataclass(slots=True)
class Outcome:
    """How a task ended: finished (outputs) and/or stopped by a directive."""

    finished: bool
    outputs: tuple[Any, ...] = ()
    ui: dict[str, Any] | None = None
    directive: Directive | None = None
    step: int = 0
    step_state: Any = NO_STATE


class Plan(ABC):
    """A run's schedule and data. Only the executor calls these methods."""

    kind: str
    run_id: str
    in_flight: dict[str, tuple[int, Any]]  # node -> (step, step state) of stopped steppables

    @abstractmethod
    async def ready(self, limit: int) -> list[Task]:
        """Up to ``limit`` tasks that can start now; each is handed out once."""

    @abstractmethod
    def complete(self, task: Task, outputs: tuple[Any, ...], ui: dict[str, Any] | None) -> None:
        """Record a finished task."""

    @abstractmethod
    def stopped(self, task: Task, outcome: Outcome) -> None:
        """Record a task stopped before finishing (it will start or continue on resume)."""

    async def settle(self) -> None:  # noqa: B027 (optional hook, most plans have nothing to do)
        """Called once when a run stops early, before ``is_done``: finish any bookkeeping
        that normally happens when the next tasks are asked for."""

    @abstractmethod
    def is_done(self) -> bool:
        """True when nothing is left to run."""

    @abstractmethod
    def encode(self, encoder: Encoder) -> Checkpoint:
        """The plan's state as its typed checkpoint (binary parts go to ``encoder.blobs``)."""

    def snapshot(
        self, encoder: Encoder, task: Task | None, step: int, state: Any
    ) -> Checkpoint:
        """The plan encoded as if the run stopped now, with ``task`` (if given) at
        ``step``: a checkpoint of a running plan. Tasks running at this moment are saved
        as not started (they run again from their start on resume: the same result)."""
        saved = dict(self.in_flight)
        if task is not None:
            self.in_flight[task.node_id] = (step, state)
        try:
            return self.encode(encoder)
        finally:
            self.in_flight = saved
