"""A hook that shows a run's progress on a terminal."""

from __future__ import annotations

import sys
from typing import TextIO

from midrun.engine.control import ControlPoint, Directive, Hook, Position, RunEvent


class ProgressPrinter(Hook):
    """Prints one line per node and a live step counter for steppable nodes."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self._inline = False
        self._tty = bool(getattr(self.stream, "isatty", lambda: False)())

    def _line(self, text: str) -> None:
        if self._inline:
            self.stream.write("\n")
            self._inline = False
        self.stream.write(text + "\n")
        self.stream.flush()

    async def on_point(self, point: ControlPoint) -> Directive | None:
        label = f"[{point.node_id} {point.class_type}]"
        if point.position == Position.BEFORE:
            self._line(f"{label} running")
        elif point.position == Position.STEP:
            total = f"/{point.total_steps}" if point.total_steps is not None else ""
            if self._tty:
                self.stream.write(f"\r{label} step {point.step}{total}")
                self.stream.flush()
                self._inline = True
            elif point.step is not None and (
                point.step % 10 == 0 or point.step == point.total_steps
            ):
                self._line(f"{label} step {point.step}{total}")
        elif point.position == Position.ERROR:
            self._line(f"{label} error: {point.error}")
        return None

    async def on_event(self, event: RunEvent) -> None:
        if event.kind == "cached":
            self._line(f"cached: {', '.join(event.data['nodes'])}")
        elif event.kind not in ("started", "executed"):
            reason = event.data.get("reason")
            self._line(f"run {event.kind}" + (f": {reason}" if reason else ""))
