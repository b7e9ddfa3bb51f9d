"""The job's hook on its run's control points: where a job notices pause, abort and edit
requests, stops at its breakpoints and step requests, reports progress and writes its
periodic checkpoints. Nothing else in the job system decides when a run stops.

Where a job stopped is kept in its row's ``progress`` (``held``: why). A run suspended
before a node starts meets that node's ``before`` point again when it continues; the new
run's hook knows it from ``progress`` and does not stop there a second time for the
breakpoint or step that stopped it (a plain pause there still lets its breakpoints fire).
Nodes a continued run recomputes (finished before, values not saved) are replays: their
points are not where a breakpoint or a step stops."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from midrun.core.errors import MidrunError, disk_full
from midrun.core.events import EventKind
from midrun.debug import stops
from midrun.debug.breakpoints import BreakpointSet
from midrun.debug.stops import Stepping
from midrun.engine.control import ControlPoint, Directive, Hook, Position, RunEvent
from midrun.engine.runstate import RunState
from midrun.jobs import breakpoints
from midrun.jobs.breakpoints import step_mode_of
from midrun.jobs.states import JobState

if TYPE_CHECKING:
    from midrun.jobs.service import Jobs

log = logging.getLogger(__name__)
PAUSE, EDIT = "pause", "edit"
BREAKPOINT, STEP = "breakpoint", "step"
DISK_FULL = "disk_full"  # a node's write found the disk full: the job pauses there
# Breakpoint changes made in this process reach a running job at once (its mailbox is
# poked); those made elsewhere are read this often.
BREAKPOINT_POLL_S = 1.0


class JobHook(Hook):
    def __init__(self, service: Jobs, job_id: str) -> None:
        self.service = service
        self.job_id = job_id
        self.settings = service.settings
        self.signal = service.signals.open(job_id)
        self.signal.changed.set()  # read the row at the first point
        self._next_poll = 0.0
        self._next_breakpoints = 0.0
        self._last_progress = 0.0
        self._last_checkpoint = time.monotonic()
        self._steps_since_checkpoint = 0
        self.breakpoints = BreakpointSet()
        self.stepping: Stepping | None = None
        self.workflow_id: str | None = None
        self._begun = False
        # The node whose before point the run stopped at, and whether its breakpoints
        # were checked there (see the module's docstring).
        self._refire: tuple[str, bool] | None = None
        # Nodes that had finished when the run was saved: a continued run recomputes the
        # ones whose values could not be saved (models...). That is not progress: their
        # points neither stop the job nor log.
        self._replayed: frozenset[str] = frozenset()
        self._done: set[str] = set()  # nodes finished in this execution
        self._kind = "workflow"

    def continues(self, saved: RunState) -> None:
        """The run continues from ``saved`` (a checkpoint): the nodes that had finished
        are replays when it recomputes them."""
        if saved.kind == "workflow":
            self._replayed = frozenset(saved.workflow_checkpoint().finished)

    async def on_point(self, point: ControlPoint) -> Directive | None:
        if not self._begun:
            self._begin()
        # The first point after the ones replayed (models reloaded) is where the job
        # stopped: its breakpoint does not fire again.
        refire = None
        if self._refire is not None and point.node_id not in self._replayed:
            refire, self._refire = self._refire, None
            if point.position != Position.BEFORE or point.node_id != refire[0]:
                refire = None
        if point.position == Position.ERROR and point.error is not None \
                and disk_full(point.error):  # fmt: skip
            # Paused where the write failed (the node runs again on resume), not failed:
            # once space is freed it goes on. If even its checkpoint does not fit, the
            # worker fails it with insufficient_storage instead.
            return self._stop(point, DISK_FULL, [], error=f"{type(point.error).__name__}: "
                              f"{point.error}")  # fmt: skip
        signal = self.signal
        signal.node_id, signal.step = point.node_id, point.step
        signal.total_steps = point.total_steps
        clock = time.monotonic()
        if point.position == Position.STEP:
            self._steps_since_checkpoint += 1
            self.service.bus.emit(EventKind.PROGRESS, job_id=self.job_id, node_id=point.node_id,
                                  step=point.step, total_steps=point.total_steps)  # fmt: skip
        elif point.position == Position.BEFORE:
            self.service.bus.emit(EventKind.NODE_STARTED, job_id=self.job_id, node_id=point.node_id,
                                  class_type=point.class_type)  # fmt: skip
        if clock - self._last_progress >= self.settings.progress_interval:
            self._last_progress = clock
            self._write_progress(point)
        directive = None
        if signal.changed.is_set() or clock >= self._next_poll:
            directive = self._poll(clock)
        directive = directive or self._debug_stop(point, refire)
        if directive is not None:
            if directive.reason == PAUSE:
                self._write_progress(point, held=PAUSE)
            return directive
        if point.checkpoint is not None and self._checkpoint_due(point, clock):
            self._checkpoint(point)
        return None

    async def on_event(self, event: RunEvent) -> None:
        if event.kind == "started":
            if self._begun and self._kind == "workflow":
                # Resumed in place (after taking edits): what finished before is replayed.
                self._replayed = self._replayed | self._done
        elif event.kind == "cached":
            self.service.bus.emit(EventKind.CACHED, job_id=self.job_id, nodes=event.data["nodes"])
        elif event.kind == "executed":
            self._done.add(event.data["node_id"])
            self.service.bus.emit(EventKind.NODE_EXECUTED, job_id=self.job_id, **event.data)

    def _poll(self, clock: float) -> Directive | None:
        """Read the row's requests (and, when poked or due, the job's breakpoints)."""
        poked = self.signal.changed.is_set()
        self.signal.changed.clear()
        self._next_poll = clock + self.settings.poll_interval
        reload = poked or clock >= self._next_breakpoints
        if reload:
            self._next_breakpoints = clock + max(BREAKPOINT_POLL_S, self.settings.poll_interval)
        return self._read_requests(reload)

    def _read_requests(self, reload_breakpoints: bool = False) -> Directive | None:
        with self.service.db.read() as conn:
            row = self.service.store.requests(conn, self.job_id)
            if row is not None and reload_breakpoints:
                self.breakpoints.replace(breakpoints.active(conn, self.job_id,
                                                            self.workflow_id))  # fmt: skip
        if row is None:
            return Directive.abort("job row vanished")
        return _directive(row.state, row.request, row.request_reason)

    # -- breakpoints and stepping ------------------------------------------------------

    def _begin(self) -> None:
        """At the run's first point: where the job stopped last, and a step request it
        was resumed with (taken off the row: it is this run's, once)."""
        self._begun = True
        service = self.service
        job = service.get(self.job_id)
        self.workflow_id, self._kind = job.workflow_id, job.kind
        progress = job.progress or {}
        held = progress.get("held")
        if held and progress.get("position") == Position.BEFORE.value:
            self._refire = (str(progress.get("node")), held in (BREAKPOINT, STEP))
        mode = step_mode_of(job.request)
        if mode is None:
            return
        with service.db.begin() as conn:
            job = service.store.lock(conn, self.job_id)
            if step_mode_of(job.request) != mode:
                return
            service.store.transition(conn, job, None, request=None)
        node = progress.get("node") if held else None
        self.stepping = Stepping(mode, node, progress.get("position") if node else None)

    def _debug_stop(
        self, point: ControlPoint, refire: tuple[str, bool] | None
    ) -> Directive | None:
        """Stop here for a step request or a breakpoint; logpoints only report."""
        if point.node_id in self._replayed:
            return None
        stepped = refire is None and self.stepping is not None and self.stepping.stops_at(point)
        match = stops.Match()
        if len(self.breakpoints) and not (refire is not None and refire[1]):
            match = stops.match(self.breakpoints, point, workflow_id=self.workflow_id)
        for bp in match.failed:  # passed a limit of the evaluator: off, and the job goes on
            breakpoints.disable_failed(self.service, self.job_id, bp, point.step)
        for bp, message in match.logs:
            self.service.bus.emit(EventKind.LOGPOINT, job_id=self.job_id, node_id=point.node_id,
                                  step=point.step, breakpoint_id=bp.id,
                                  message=message)  # fmt: skip
        if match.hits:
            return self._stop(point, BREAKPOINT, [bp.id for bp in match.hits])
        if stepped:
            return self._stop(point, STEP, [])
        return None

    def _stop(self, point: ControlPoint, by: str, hits: list[str], **data: Any
              ) -> Directive | None:  # fmt: skip
        """Pause the job here (``running -> pausing``, as a pause request would);
        ``data`` goes with its ``pausing`` event."""
        service, job_id = self.service, self.job_id
        mode = self.stepping.mode.value if self.stepping else None
        self.stepping = None
        position = point.position.value
        with service.db.begin() as conn:
            job = service.store.lock(conn, job_id)
            if job.state != JobState.RUNNING or job.request == "abort":
                return _directive(job.state.value, job.request, job.request_reason)
            service.store.transition(conn, job, JobState.PAUSING, paused_by=by)
            for bp_id in hits:
                service.store.record(conn, job_id, EventKind.BREAKPOINT_HIT, step=point.step,
                                     node_id=point.node_id, breakpoint_id=bp_id,
                                     position=position)  # fmt: skip
            if by == STEP:
                service.store.record(conn, job_id, EventKind.STEP_REACHED, step=point.step,
                                     node_id=point.node_id, mode=mode,
                                     position=position)  # fmt: skip
            service.store.record(conn, job_id, EventKind.PAUSING, by=by, step=point.step,
                                 node_id=point.node_id, **data)  # fmt: skip
            # Where it stops is on the row before anyone hears of the stop.
            service.store.set_progress(conn, job_id, _progress(point, held=by))
        return Directive.suspend(by)

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
        try:
            self.service.artifacts.save_run_state(self.job_id, state)
        except OSError as exc:
            if not disk_full(exc):
                raise
            # A crash checkpoint is a precaution: the run goes on, the previous one stays.
            log.warning("job %s: no room for its checkpoint at step %s", self.job_id,
                        point.step)  # fmt: skip
            self._last_checkpoint = time.monotonic()
            return
        step = point.step if point.position == Position.STEP else 0
        with self.service.db.begin() as conn:
            self.service.store.set_checkpoint_step(conn, self.job_id, step)
        self._last_checkpoint = time.monotonic()
        self._steps_since_checkpoint = 0

    def _write_progress(self, point: ControlPoint, held: str | None = None) -> None:
        with self.service.db.begin() as conn:
            self.service.store.set_progress(conn, self.job_id, _progress(point, held))


def _progress(point: ControlPoint, held: str | None = None) -> dict[str, Any]:
    """A job row's ``progress``: where its run stands, and (``held``) why it stops there
    (see the module's docstring)."""
    progress: dict[str, Any] = {"node": point.node_id, "class_type": point.class_type,
                                "position": point.position.value}  # fmt: skip
    if point.step is not None:
        progress.update(step=point.step, total_steps=point.total_steps)
    if held is not None:
        progress["held"] = held
    return progress


def _directive(state: str, request: str | None, reason: str | None) -> Directive | None:
    """What a job's row asks of its run."""
    if request == "abort":
        return Directive.abort(reason or "aborted")
    if state == JobState.PAUSING.value:
        return Directive.suspend(PAUSE)
    if request == EDIT:
        return Directive.suspend(EDIT)
    return None
