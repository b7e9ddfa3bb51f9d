"""One claimed job, run by a worker: build its run (fresh, or from its checkpoint with the
pending edits applied), drive it with the job's hooks, and record how it ended."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from midrun.core.errors import InsufficientStorage, MidrunError, RunStateError, disk_full
from midrun.core.events import EventKind
from midrun.engine.edits import apply_edits, edit_suspended
from midrun.engine.executor import Executor, RunStatus
from midrun.engine.runstate import RunState
from midrun.engine.workflow_plan import RunContext
from midrun.graph.workflow import Workflow
from midrun.jobs.hook import EDIT, JobHook
from midrun.jobs.previews import PreviewRecorder, preview_every
from midrun.jobs.records import Job
from midrun.jobs.states import JobConflict, JobState, ended_as
from midrun.store.database import after_commit

if TYPE_CHECKING:
    from midrun.jobs.backends import Backend
    from midrun.jobs.service import Jobs

log = logging.getLogger(__name__)
SETTLE_ATTEMPTS = 20  # edits or undos racing the pickup of edits: take them again
# What each way a run ends leaves its job in (a suspend is a pause: edits are taken in place).
OUTCOME = {RunStatus.COMPLETED: JobState.COMPLETED, RunStatus.FAILED: JobState.FAILED,
           RunStatus.ABORTED: JobState.ABORTED, RunStatus.SUSPENDED: JobState.PAUSED}


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
        """Run the job until it completes, fails, pauses or aborts; returns its row. The
        hook's directive decides how each drive ends; this reads only the run's result."""
        try:
            state, prompt = self._prepare()
        except MidrunError as exc:
            return self._finish(RunEnd(RunStatus.FAILED, error=exc))
        except Exception as exc:  # a fault of midrun's own, not the job's: it still ends
            log.exception("job %s: preparing its run failed", self.job.id)
            return self._finish(RunEnd(RunStatus.FAILED, error=WorkerFault(exc, "preparing")))
        try:
            while True:
                end = await self._drive(state, prompt)
                if not (end.status == RunStatus.SUSPENDED and end.reason == EDIT
                        and end.state is not None):  # fmt: skip
                    break
                # Suspended to take edits made while running: apply them and go on here.
                try:
                    state = self._take_edits(end.state, end.step, clear_request=True)
                except MidrunError:
                    # The edits could not be settled (they kept changing): the run, saved,
                    # goes back to the queue and takes them when it is claimed again.
                    log.exception("job %s: taking edits in place failed", self.job.id)
                    break
                self.hook.signal.changed.set()  # its first point reads the row again
        finally:
            if self.previews is not None:
                self.previews.close()
        return self._finish(end)

    # -- building the run ------------------------------------------------------------------

    def _prepare(self) -> tuple[RunState | None, dict[str, Any]]:
        job = self.job
        state = self._load_checkpoint()
        if state is not None:
            self.hook.continues(state)
            return self._take_edits(state, job.checkpoint_step), {}
        if job.kind != "workflow":
            return None, job.workflow
        prompt = self._settle_edits(None, lambda taken: (apply_edits(job.workflow, taken), []))
        return None, prompt

    def _load_checkpoint(self) -> RunState | None:
        """The job's saved run, None if it has none. One that cannot be read fails the job
        (:class:`RunStateError`, naming what is wrong) or, with
        ``JobSettings.broken_checkpoint = "restart"``, is set aside
        (``jobs/{id}/broken_checkpoint``) and the job runs again from its start."""
        job_id = self.job.id
        try:
            return self.service.artifacts.load_run_state(job_id)
        except RunStateError as exc:
            error = exc
        except (OSError, ValueError, TypeError, KeyError, AttributeError) as exc:
            error = RunStateError(f"The checkpoint of job {job_id} cannot be read: "
                                  f"{type(exc).__name__}: {exc}")  # fmt: skip
        if self.service.settings.broken_checkpoint != "restart":
            raise error
        log.warning("job %s restarts from its start: %s", job_id, error.message)
        artifacts = self.service.artifacts
        artifacts.delete(f"jobs/{job_id}/broken_checkpoint")
        moved = artifacts.move(f"jobs/{job_id}/checkpoint", f"jobs/{job_id}/broken_checkpoint")
        artifacts.delete(f"jobs/{job_id}/.checkpoint.old")  # nor the one before it
        with self.service.db.begin() as conn:
            job = self.service.store.lock(conn, job_id)
            self.job = self.service.store.transition(conn, job, None, checkpoint_step=None)
            self.service.store.record(conn, job_id, EventKind.RECOVERED, to="running",
                                      from_checkpoint=False, reason=error.message,
                                      kept_as=moved)  # fmt: skip
        return None

    def _take_edits(self, state: RunState, step: int | None, *, clear_request: bool = False
                    ) -> RunState:  # fmt: skip
        """Apply the pending edits to a suspended run (each was checked when made; one
        that no longer applies is marked refused and the run goes on without it)."""
        registry = self.backend.registry

        def replay(taken: list[dict[str, Any]]) -> tuple[RunState, list[tuple[Any, str]]]:
            edited, refused = state, []
            for r in taken:
                try:
                    edited = edit_suspended(edited, r["node_id"], r["input_name"], r["new"],
                                            registry)  # fmt: skip
                except MidrunError as exc:
                    refused.append((r, str(exc)))
            return edited, refused

        return self._settle_edits(step, replay, clear_request=clear_request)

    def _settle_edits(self, step: int | None, apply: Any, *, clear_request: bool = False
                      ) -> Any:  # fmt: skip
        """Take the job's pending edits: ``apply(edits) -> (result, refused)`` runs outside
        any write transaction (a checkpoint's edits are replayed on it); a short one then
        marks them applied or refused, provided they are still the pending ones (an edit
        or undo in between: take them again)."""
        service, store, job_id = self.service, self.service.store, self.job.id
        for _ in range(SETTLE_ATTEMPTS):
            pending = store.edits(job_id, status="pending")
            if not pending and not clear_request:
                result, _refused = apply([])
                return result
            result, refused = apply(pending)
            with service.db.begin() as conn:
                job = store.lock(conn, job_id)  # the row first, as edit and undo lock it
                now = store.edits(job_id, status="pending", connection=conn)
                if [e["id"] for e in now] != [e["id"] for e in pending]:
                    continue  # changed while they were applied: take them again
                if clear_request and job.request == EDIT:  # never clear an abort
                    store.transition(conn, job, None, request=None)
                refused_ids = {r["id"] for r, _ in refused}
                for r, why in refused:
                    store.settle_edits(conn, [r["id"]], "refused", reason=why)
                    store.record(conn, job_id, EventKind.EDIT_REFUSED, node_id=r["node_id"],
                                 edit_id=r["id"], reason=why)  # fmt: skip
                applied = [r for r in pending if r["id"] not in refused_ids]
                store.settle_edits(conn, [r["id"] for r in applied], "applied", step=step)
                for r in applied:
                    store.record(conn, job_id, EventKind.EDIT_APPLIED, step=step,
                                 node_id=r["node_id"], edit_id=r["id"])  # fmt: skip
                if pending:
                    if not isinstance(result, RunState):  # a fresh job's edited workflow
                        store.set_workflow(conn, job_id, result)
                    elif result.kind == "workflow":
                        store.set_workflow(conn, job_id, result.workflow_checkpoint().workflow)
                    store.write_modified(conn, job_id)
            return result
        raise JobConflict(job_id, "take its edits", self.job.state,
                          "its edits kept changing while they were applied")  # fmt: skip

    def _context(self) -> RunContext:
        extra = self.job.extra_data or {}
        return RunContext(
            run_id=self.job.id,
            output_dir=self.service.output_dir,
            extra_pnginfo=dict(extra.get("extra_pnginfo") or {}),
            send_image=self._send_image,
        )

    def _send_image(self, index: int, total: int, data: bytes) -> None:
        """A SaveImageWebsocket image: kept as ``jobs/{id}/sent/{node}_{index}.png`` and
        announced (``image_sent``), so the prompt's client gets it over its WebSocket."""
        node_id = self.hook.signal.node_id or ""
        name = re.sub(r"[^A-Za-z0-9_.-]", "_", node_id) or "node"  # "5:3" in a subgraph
        key = f"jobs/{self.job.id}/sent/{name}_{index:05d}.png"
        self.service.artifacts.put(key, data)
        self.service.bus.emit(EventKind.IMAGE_SENT, job_id=self.job.id, node_id=node_id,
                              index=index, total=total, file=key)  # fmt: skip

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
        except Exception as exc:  # a fault of midrun's own (node errors are the run's)
            if disk_full(exc):
                return RunEnd(RunStatus.FAILED, error=no_space(f"{type(exc).__name__}: {exc}"))
            log.exception("job %s: its run failed outside its nodes", job.id)
            return RunEnd(RunStatus.FAILED, error=WorkerFault(exc, "running"))
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
        if end.status == RunStatus.ABORTED or (
                end.status == RunStatus.SUSPENDED and self._abort_asked()):  # fmt: skip
            self._decode_partial(end)  # kept with the partial results
        released = self._release(end)
        if end.state is not None and end.status in (RunStatus.SUSPENDED, RunStatus.ABORTED):
            try:
                service.artifacts.save_run_state(job_id, end.state)
            except OSError as exc:
                if not disk_full(exc):
                    raise
                end = self._no_room(end, exc)
        if end.status == RunStatus.FAILED and end.error is not None and disk_full(end.error):
            end.error = no_space(end.error.message, node_id=end.error.extra_info.get("node_id"))
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
        if job.state == JobState.COMPLETED:
            service.artifacts.delete(f"jobs/{job_id}/checkpoint")
        return job

    def _record(self, conn: Any, job: Job, end: RunEnd, released: int) -> Job:
        store = self.service.store
        outputs = _jsonable(end.outputs)
        target = ended_as(OUTCOME[end.status], job.state, job.request)
        if target == JobState.COMPLETED:
            job = store.transition(conn, job, JobState.COMPLETED, outputs=outputs,
                                   worker_id=None, progress={})  # fmt: skip
            store.record(conn, job.id, EventKind.COMPLETED)
        elif target == JobState.FAILED:
            error = end.error.to_dict() if end.error else {"message": end.reason}
            job = store.transition(conn, job, JobState.FAILED, error=error, outputs=outputs,
                                   worker_id=None)  # fmt: skip
            store.record(conn, job.id, EventKind.FAILED, step=end.step, error=error)
        elif target == JobState.ABORTED:
            reason = job.request_reason or end.reason or "aborted"
            job = store.transition(conn, job, JobState.ABORTED, outputs=outputs, worker_id=None,
                                   checkpoint_step=end.step)  # fmt: skip
            store.update_debug(conn, job.id, abort_reason=reason, paused_at_step=end.step)
            store.record(conn, job.id, EventKind.ABORTED, step=end.step, reason=reason,
                         partial=end.state is not None)  # fmt: skip
        elif target == JobState.QUEUED:  # its pause was cancelled: on, from its saved run
            job = store.transition(conn, job, JobState.QUEUED, worker_id=None, request=None,
                                   checkpoint_step=end.step, paused_by=None,
                                   number=store.next_number(conn, front=True))  # fmt: skip
            store.record(conn, job.id, EventKind.RESUMED, step=end.step, front=True,
                         reason="its pause was cancelled")  # fmt: skip
            after_commit(conn, self.service.signals.wake_workers)
        else:  # suspended for a pause
            job = store.transition(conn, job, JobState.PAUSED, outputs=outputs, worker_id=None,
                                   checkpoint_step=end.step, request=None)  # fmt: skip
            store.update_debug(conn, job.id, paused_at_step=end.step)
            store.record(conn, job.id, EventKind.PAUSED, step=end.step, by=job.paused_by,
                         released_bytes=released)  # fmt: skip
        self.service.count_batch(conn, job)
        store.index_files(conn, job, outputs)
        return job

    def _no_room(self, end: RunEnd, exc: OSError) -> RunEnd:
        """The run stopped but its checkpoint did not fit on the disk: a pause cannot
        keep it, so the job fails with ``insufficient_storage`` (the previous checkpoint,
        if any, stays); an abort keeps no partial run and still ends aborted."""
        log.error("job %s: no room for its checkpoint: %s", self.job.id, exc)
        if end.status == RunStatus.ABORTED:
            end.state = None
            return end
        error = no_space(f"the job's checkpoint at step {end.step} could not be saved "
                         f"({exc.strerror or exc}), so it could not pause")  # fmt: skip
        return RunEnd(RunStatus.FAILED, error=error, outputs=end.outputs, step=end.step)

    def _abort_asked(self) -> bool:
        """Whether an abort is pending on the row (a suspended run that will end aborted
        gets its partial image; the recording itself settles the outcome)."""
        with self.service.db.read() as conn:
            row = self.service.store.requests(conn, self.job.id)
        return row is not None and row.request == "abort"

    def _decode_partial(self, end: RunEnd) -> None:
        """On abort (``JobSettings.decode_on_abort``), the sampler's current estimate
        decoded to ``jobs/{id}/partial_{node}.png``, kept with the partial results."""
        if not (self.service.settings.decode_on_abort and self.backend.generates and end.live):
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
                try:
                    self.service.artifacts.put(key, image)
                except OSError as exc:
                    if not disk_full(exc):
                        raise
                    log.warning("job %s: no room for its partial image", self.job.id)
                    continue
                end.outputs.setdefault("partial", {})[node_id] = key

    def _release(self, end: RunEnd) -> int:
        """Give the job's device memory back (its step tensors; models stay cached)."""
        held = self.backend.held_bytes(end.live)
        end.live = None
        self.backend.release()
        return held


def no_space(what: str, **extra: Any) -> InsufficientStorage:
    """A job's end on a full disk, saying what did not fit."""
    return InsufficientStorage(f"The disk is full: {what}. Free space and run the job again",
                               **extra)  # fmt: skip


class WorkerFault(MidrunError):
    """Something midrun's own code did not expect while it prepared or drove a job's run
    (a bug, or data it should have refused): the job fails with it rather than staying
    running with nobody running it."""

    type = "worker_error"

    def __init__(self, exc: BaseException, doing: str) -> None:
        super().__init__(f"The worker failed while {doing} the job: {type(exc).__name__}: {exc}",
                         exception_type=type(exc).__name__)  # fmt: skip


def _jsonable(value: Any) -> Any:
    """UI results are JSON already; anything else (a StateGraph's objects) is summarised."""
    import json

    try:
        json.dumps(value)
        return value
    except (TypeError, ValueError):
        return {"summary": repr(value)[:2000]}
