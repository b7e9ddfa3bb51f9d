"""Small hooks: record what a run does, or stop it at a chosen place."""

from __future__ import annotations

from dataclasses import dataclass, field

from midrun.engine.control import ControlPoint, Directive, Hook, Position, RunEvent


@dataclass(frozen=True, slots=True)
class TraceEntry:
    position: str
    node_id: str
    class_type: str
    step: int | None = None
    total_steps: int | None = None


@dataclass
class Tracer(Hook):
    """Records every control point and run event (positions, nodes, steps) in order."""

    points: list[TraceEntry] = field(default_factory=list)
    events: list[RunEvent] = field(default_factory=list)

    async def on_point(self, point: ControlPoint) -> Directive | None:
        self.points.append(
            TraceEntry(
                point.position.value, point.node_id, point.class_type, point.step, point.total_steps
            )
        )
        return None

    async def on_event(self, event: RunEvent) -> None:
        self.events.append(event)

    def nodes(self, position: Position = Position.AFTER) -> list[str]:
        """Node ids in the order they reached ``position``."""
        return [p.node_id for p in self.points if p.position == position.value]


@dataclass
class StopAt(Hook):
    """Suspends (or aborts) the run when ``node_id`` reaches ``position``/``step``.

    ``step=None`` with ``position=STEP`` matches the first step point of the node.
    Fires once, so a resumed run goes on.
    """

    node_id: str
    position: Position = Position.STEP
    step: int | None = None
    abort: bool = False
    reason: str = "stop requested"
    fired: bool = False

    async def on_point(self, point: ControlPoint) -> Directive | None:
        if self.fired or point.node_id != self.node_id or point.position != self.position:
            return None
        if self.step is not None and point.step != self.step:
            return None
        self.fired = True
        return Directive.abort(self.reason) if self.abort else Directive.suspend(self.reason)
