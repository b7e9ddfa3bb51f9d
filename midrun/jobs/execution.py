"""One claimed job, run by a worker: build its run (fresh, or from its checkpoint with the
pending edits applied), drive it with the job's hooks, and record how it ended."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy import update

from midrun.core.errors import MidrunError, RunStateError
from midrun.engine.edits import edit_suspended
from midrun.engine.executor import Executor, RunStatus
from midrun.engine.runstate import RunState
from midrun.engine.workflow_plan import RunContext
from midrun.graph.workflow import Workflow
from midrun.jobs.hook import EDIT, JobHook
from midrun.jobs.previews import PreviewRecorder, preview_every
from midrun.jobs.records import Job
from midrun.jobs.service import apply_edits
from midrun.jobs.states import JobConflict, JobState
from midrun.store.schema import job_edits, jobs

if TYPE_CHECKING:
    from midrun.jobs.backends import Backend
    from midrun.jobs.service import Jobs

log = logging.getLogger(__name__)


@dataclass(slots=True)
class RunEnd:
    """How one drive of a run ended, for either kind of run."""

    status: RunStatus
    reason: str = ""
    error: MidrunError | None = None
    state: RunState | None = None
    outputs: dict[str, Any] = field(default_factory=dict)
    step: int | None = None
    live: Any = None  # the in-flight step states, before encoding (device tensors)


class Execution:
    def __init__(self, service: Jobs, job: Job, worker_id: str, backend: Backend) -> None:
        self.service = service
        self.job = job
        self.worker_id = worker_id
        self.backend = backend  # the worker's: its registry and device runtime run the job
        self.hook = JobHook(service, job.id)
        self.previews = (PreviewRecorder(service, job.id, preview_every(job.extra_data),
                                         self.backend.runtime)
                         if self.backend.generates else None)  # fmt: skip

    async def run(self) -> Job | None:
        """Run the job until it completes, fails, pauses or aborts; returns its row."""
        try:
            state, prompt = self._prepare()
        except MidrunError as exc:
            return self._finish(RunEnd(RunStatus.FAILED, error=exc))
        try:
            while True:
                end = await self._drive(state, prompt)
                if end.status != RunStatus.SUSPENDED or end.state is None:
                    break
                row = self.service.get(self.job.id)
                if row.state != JobState.RUNNING or row.request == "abort":
                    break
                # Suspended to take edits made while running: apply them and go on.
                state = self._take_edits(end.state, end.step, clear_request=True)
                self.hook.signal.changed.set()
        finally:
            if self.previews is not None:
                self.previews.close()
        return self._finish(end)

    # -- building the run ------------------------------------------------------------------

    def _prepare(self) -> tuple[RunState | None, dict[str, Any]]:
        job = self.job
        state = self.service.artifacts.load_run_state(job.id)
        if state is not None:
            return self._take_edits(state, job.checkpoint_step), {}
        with self.service.db.begin() as conn:
            taken = self._claim_edits(conn, None)
            prompt = apply_edits(job.workflow, taken) if job.kind == "workflow" else job.workflow
            if taken:
                conn.execute(update(jobs).where(jobs.c.id == job.id).values(workflow=prompt))
                self.service.write_modified(conn, job.id)
        return None, prompt

    def _claim_edits(self, conn: Any, step: int | None) -> list[Any]:
        pending = self.service.store_edits(conn, self.job.id, "pending")
        if pending:
            conn.execute(
                update(job_edits)
                .where(job_edits.c.id.in_([r.id for r in pending]))
                .values(status="applied", applied_step=step)
            )
        return pending

    def _take_edits(self, state: RunState, step: int | None, *, clear_request: bool = False
                    ) -> RunState:  # fmt: skip
        """Apply the pending edits to a suspended run (each was checked when made; one
        that no longer applies is marked refused and the run goes on without it)."""
        service = self.service
        with service.db.begin() as conn:
            if clear_request:
                job = service.store.lock(conn, self.job.id)
                if job.request == EDIT:  # never clear an abort that arrived meanwhile
                    service.store.transition(conn, job, None, request=None)
            taken = self._claim_edits(conn, step)
            refused: list[tuple[Any, str]] = []
            for r in taken:
                try:
                    state = edit_suspended(state, r.node_id, r.input_name, r.new,
                                           service.registry)  # fmt: skip
                except MidrunError as exc:
                    refused.append((r, str(exc)))
            for r, why in refused:
                conn.execute(update(job_edits).where(job_edits.c.id == r.id)
                             .values(status="refused", reason=why))  # fmt: skip
                service.store.event(conn, self.job.id, "edit_refused", node_id=r.node_id,
                                    edit_id=r.id, reason=why)  # fmt: skip
            for r in taken:
                if all(r is not x for x, _ in refused):
                    service.store.event(conn, self.job.id, "edit_applied", step=step,
                                        node_id=r.node_id, edit_id=r.id)  # fmt: skip
            if taken:
                if state.kind == "workflow":
                    prompt = state.workflow_checkpoint().workflow
                    conn.execute(update(jobs).where(jobs.c.id == self.job.id)
                                 .values(workflow=prompt))  # fmt: skip
                service.write_modified(conn, self.job.id)
        for r, why in refused:
            service.bus.emit("edit_refused", job_id=self.job.id, edit_id=r.id, reason=why)
        for r in taken:
            if all(r is not x for x, _ in refused):
                service.bus.emit("edit_applied", job_id=self.job.id, edit_id=r.id, step=step)
        return state

    def _context(self) -> RunContext:
        extra = self.job.extra_data or {}
        return RunContext(
            run_id=self.job.id,
            output_dir=self.service.output_dir,
            extra_pnginfo=dict(extra.get("extra_pnginfo") or {}),
        )

    async def _drive(self, state: RunState | None, prompt: dict[str, Any]) -> RunEnd:
        hooks: list[Any] = [self.hook]
        if self.previews is not None:
            hooks.append(self.previews.hook)
        job = self.job
        try:
            if job.kind == "stategraph":
                return await self._drive_graph(state, hooks)
            executor = Executor(hooks=hooks)
            if state is not None:
                result = await executor.resume(state, self.backend.registry,
                                               context=self._context())  # fmt: skip
            else:
                result = await executor.run(Workflow.from_api(prompt), self.backend.registry,
                                            context=self._context(), run_id=job.id)  # fmt: skip
        except MidrunError as exc:
            return RunEnd(RunStatus.FAILED, error=exc)
        steps = [s for s, _ in result.in_flight.values()]
        ui = dict(getattr(result.plan, "ui", {}) or {})
        return RunEnd(result.status, result.reason, result.error, result.state, ui,
                      max(steps) if steps else None, result.in_flight)  # fmt: skip

    async def _drive_graph(self, state: RunState | None, hooks: list[Any]) -> RunEnd:
        graph = self.service.graphs.get(self.job.workflow["graph"])
        if graph is None:
            raise RunStateError(f"State graph {self.job.workflow['graph']!r} is not "
                                "registered in this process")  # fmt: skip
        if state is not None:
            result = await graph.resume(state, hooks=hooks)
        else:
            result = await graph.invoke(self.job.workflow["input"], hooks=hooks,
                                        run_id=self.job.id)  # fmt: skip
        outputs = {"state": result.state} if result.success else {}
        step = None
        if result.run_state is not None:
            steps = list(result.run_state.steps().values())
            step = max(steps) if steps else None
        return RunEnd(result.status, result.reason, result.error, result.run_state, outputs,
                      step)  # fmt: skip

    # -- how it ended --------------------------------------------------------------------

    def _finish(self, end: RunEnd) -> Job | None:
        service, job_id = self.service, self.job.id
        if end.status in (RunStatus.ABORTED, RunStatus.SUSPENDED):
            self._decode_partial(end)
        released = self._release(end)
        if end.state is not None and end.status in (RunStatus.SUSPENDED, RunStatus.ABORTED):
            service.artifacts.save_run_state(job_id, end.state)
        if self.previews is not None and end.status == RunStatus.COMPLETED:
            self.previews.retain()  # before the job reads as completed
        try:
            with service.db.begin() as conn:
                job = service.store.lock(conn, job_id)
                if job.worker_id != self.worker_id or job.state not in (
                    JobState.RUNNING, JobState.PAUSING
                ):
                    # Recovered elsewhere while this worker was presumed dead: not ours.
                    log.warning("job %s is %s on %s; dropping this worker's result", job_id,
                                job.state.value, job.worker_id)  # fmt: skip
                    return None
                job = self._record(conn, job, end, released)
        except JobConflict:
            log.exception("job %s changed while its result was recorded", job_id)
            return None
        finally:
            service.signals.close(job_id)
        service.bus.emit(job.state.value, job_id=job_id, step=end.step,
                         reason=end.reason if job.state == JobState.ABORTED else None,
                         error=job.error)  # fmt: skip
        if job.state == JobState.COMPLETED:
            service.artifacts.delete(f"jobs/{job_id}/checkpoint")
        return job

    def _record(self, conn: Any, job: Job, end: RunEnd, released: int) -> Job:
        _service, store = self.service, self.service.store
        outputs = _jsonable(end.outputs)
        if end.status == RunStatus.COMPLETED:
            job = store.transition(conn, job, JobState.COMPLETED, outputs=outputs,
                                   worker_id=None, progress={})  # fmt: skip
            store.event(conn, job.id, "completed")
        elif end.status == RunStatus.FAILED:
            error = end.error.to_dict() if end.error else {"message": end.reason}
            job = store.transition(conn, job, JobState.FAILED, error=error, outputs=outputs,
                                   worker_id=None)  # fmt: skip
            store.event(conn, job.id, "failed", step=end.step, error=error)
        elif job.request == "abort" or end.status == RunStatus.ABORTED:
            reason = job.request_reason or end.reason or "aborted"
            job = store.transition(conn, job, JobState.ABORTED, outputs=outputs, worker_id=None,
                                   checkpoint_step=end.step)  # fmt: skip
            store.update_debug(conn, job.id, abort_reason=reason, paused_at_step=end.step)
            store.event(conn, job.id, "aborted", step=end.step, reason=reason,
                        partial=end.state is not None)  # fmt: skip
        else:  # suspended for a pause
            job = store.transition(conn, job, JobState.PAUSED, outputs=outputs, worker_id=None,
                                   checkpoint_step=end.step, request=None)  # fmt: skip
            store.update_debug(conn, job.id, paused_at_step=end.step)
            store.event(conn, job.id, "paused", step=end.step, by=job.paused_by,
                        released_bytes=released)  # fmt: skip
        if job.state.terminal and job.batch_id is not None:
            from midrun.jobs.batches import count_ended

            count_ended(conn, job)
        return job

    def _decode_partial(self, end: RunEnd) -> None:
        """On abort (``JobSettings.decode_on_abort``), the sampler's current estimate
        decoded to ``jobs/{id}/partial_{node}.png``, kept with the partial results."""
        if not (self.service.settings.decode_on_abort and self.backend.generates and end.live):
            return
        if end.status == RunStatus.SUSPENDED and self.service.get(self.job.id).request != "abort":
            return
        from midrun.diffusion.previews import decode_current

        for node_id, (_, state) in end.live.items():
            try:
                image = decode_current(state)
            except Exception:
                log.exception("decoding job %s's current latent failed", self.job.id)
                continue
            if image is not None:
                key = f"jobs/{self.job.id}/partial_{node_id}.png"
                self.service.artifacts.put(key, image)
                end.outputs.setdefault("partial", {})[node_id] = key

    def _release(self, end: RunEnd) -> int:
        """Give the job's device memory back (its step tensors; models stay cached)."""
        held = self.backend.held_bytes(end.live)
        end.live = None
        self.backend.release()
        return held


def _jsonable(value: Any) -> Any:
    """UI results are JSON already; anything else (a StateGraph's objects) is summarised."""
    import json

    try:
        json.dumps(value)
        return value
    except (TypeError, ValueError):
        return {"summary": repr(value)[:2000]}
