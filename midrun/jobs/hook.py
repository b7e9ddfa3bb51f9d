"""The job's hook on its run's control points: where a job notices pause, abort and edit
requests, reports progress and writes its periodic checkpoints. Nothing else in the job
system decides when a run stops."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from midrun.core.errors import MidrunError
from midrun.engine.control import ControlPoint, Directive, Hook, Position, RunEvent
from midrun.jobs.states import JobState
from midrun.store.schema import jobs

if TYPE_CHECKING:
    from midrun.jobs.service import Jobs

PAUSE, EDIT = "pause", "edit"


class JobHook(Hook):
    def __init__(self, service: Jobs, job_id: str) -> None:
        self.service = service
        self.job_id = job_id
        self.settings = service.settings
        self.signal = service.signals.open(job_id)
        self.signal.changed.set()  # read the row at the first point
        self._next_poll = 0.0
        self._last_progress = 0.0
        self._last_checkpoint = time.monotonic()
        self._steps_since_checkpoint = 0
        self.checkpoints = 0

    async def on_point(self, point: ControlPoint) -> Directive | None:
        signal = self.signal
        signal.node_id, signal.step = point.node_id, point.step
        signal.total_steps = point.total_steps
        clock = time.monotonic()
        if point.position == Position.STEP:
            self._steps_since_checkpoint += 1
            self.service.bus.emit("progress", job_id=self.job_id, node_id=point.node_id,
                                  step=point.step, total_steps=point.total_steps)  # fmt: skip
        elif point.position == Position.BEFORE:
            self.service.bus.emit("node_started", job_id=self.job_id, node_id=point.node_id,
                                  class_type=point.class_type)  # fmt: skip
        if clock - self._last_progress >= self.settings.progress_interval:
            self._last_progress = clock
            self._write_progress(point)
        if signal.changed.is_set() or clock >= self._next_poll:
            signal.changed.clear()
            self._next_poll = clock + self.settings.poll_interval
            directive = self._read_requests()
            if directive is not None:
                return directive
        if point.checkpoint is not None and self._checkpoint_due(point, clock):
            self._checkpoint(point)
        return None

    async def on_event(self, event: RunEvent) -> None:
        if event.kind == "started":
            self.service.bus.emit("started", job_id=self.job_id)
        elif event.kind == "cached":
            self.service.bus.emit("cached", job_id=self.job_id, nodes=event.data["nodes"])
        elif event.kind == "executed":
            self.service.bus.emit("node_executed", job_id=self.job_id, **event.data)

    def _read_requests(self) -> Directive | None:
        with self.service.db.read() as conn:
            row = conn.execute(
                select(jobs.c.state, jobs.c.request, jobs.c.request_reason).where(
                    jobs.c.id == self.job_id
                )
            ).first()
        if row is None:
            return Directive.abort("job row vanished")
        if row.request == "abort":
            return Directive.abort(row.request_reason or "aborted")
        if row.state == JobState.PAUSING.value:
            return Directive.suspend(PAUSE)
        if row.request == EDIT:
            return Directive.suspend(EDIT)
        return None

    def _checkpoint_due(self, point: ControlPoint, clock: float) -> bool:
        s = self.settings
        if s.checkpoint_every_steps and self._steps_since_checkpoint >= s.checkpoint_every_steps:
            return True
        return bool(s.checkpoint_every_seconds) and (
            clock - self._last_checkpoint >= s.checkpoint_every_seconds
        )

    def _checkpoint(self, point: ControlPoint) -> None:
        assert point.checkpoint is not None
        try:
            state = point.checkpoint()
        except MidrunError:
            return  # not encodable right now: the next point tries again
        self.service.artifacts.save_run_state(self.job_id, state)
        step = point.step if point.position == Position.STEP else 0
        with self.service.db.begin() as conn:  # not a state change: the version stays
            conn.execute(
                jobs.update().where(jobs.c.id == self.job_id).values(checkpoint_step=step)
            )
        self._last_checkpoint = time.monotonic()
        self._steps_since_checkpoint = 0
        self.checkpoints += 1

    def _write_progress(self, point: ControlPoint) -> None:
        progress: dict[str, Any] = {"node": point.node_id, "class_type": point.class_type,
                                    "position": point.position.value}  # fmt: skip
        if point.step is not None:
            progress.update(step=point.step, total_steps=point.total_steps)
        with self.service.db.begin() as conn:
            conn.execute(jobs.update().where(jobs.c.id == self.job_id).values(progress=progress))
