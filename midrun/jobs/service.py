"""The job system's front door: submit jobs, control them (pause, resume, abort, edit,
undo), read them back. The server and the CLI call these; workers run the jobs.

Every control call is one transaction that reads the job's row, checks the state machine
and compare-and-sets the row, so concurrent calls on one job each get exactly one answer:
applied, or a :class:`~midrun.jobs.states.JobConflict` carrying the state it found.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from midrun.core.errors import MidrunError
from midrun.core.events import EventKind
from midrun.core.ids import new_id
from midrun.debug.breakpoints import Breakpoint
from midrun.debug.stops import StepMode
from midrun.engine.edits import (
    EditError,
    apply_edits,
    changed_inputs,
    check_edit,
    cold_inputs,
    edit_suspended,
)
from midrun.engine.executor import WorkflowInvalidError
from midrun.graph.registry import NodeRegistry
from midrun.graph.validation import validate
from midrun.graph.workflow import Workflow
from midrun.jobs.backends import BackendFactory
from midrun.jobs.backends import shared as shared_backend
from midrun.jobs.previews import preview_every
from midrun.jobs.records import Job, JobStore
from midrun.jobs.settings import JobSettings
from midrun.jobs.signals import EventBus, Signals
from midrun.jobs.states import JobConflict, JobNotFound, JobState, check_action
from midrun.store.artifacts import ArtifactStore, LocalArtifacts, check_key
from midrun.store.database import Database
from midrun.store.schema import job_debug_state, jobs, now


class DuplicateJobId(MidrunError):
    """A job was submitted with the id of one that exists (whose it is is not said: it
    may be another user's)."""

    type = "duplicate_prompt_id"

    def __init__(self, job_id: str) -> None:
        super().__init__(f"The id {job_id} is already taken by a job; submit with another "
                         "prompt_id, or none to get a new one", prompt_id=job_id)


class Jobs:
    """Everything about jobs, for one process. ``registry`` holds the node types workflow
    jobs may use (with the diffusion runtime attached for generation); ``graphs`` the
    StateGraphs that jobs may name (user code never arrives through a job)."""

    def __init__(
        self,
        db: Database,
        registry: NodeRegistry,
        *,
        artifacts: ArtifactStore | None = None,
        data_dir: str | Path = "data",
        output_dir: str | Path | None = None,
        settings: JobSettings | None = None,
        graphs: Mapping[str, Any] | None = None,
        runtime: Any = None,
        preview_settings: Any = None,
        backends: BackendFactory | None = None,
    ) -> None:
        self.db = db
        self.bus = EventBus()
        self.store = JobStore(db, self.bus)  # records events and announces them on the bus
        self.registry = registry
        self.data_dir = Path(data_dir)
        self.artifacts = artifacts or LocalArtifacts(self.data_dir / "artifacts")
        self.output_dir = Path(output_dir) if output_dir else self.data_dir / "output"
        self.settings = settings or JobSettings()
        self.graphs = dict(graphs or {})
        # Where each worker runs its jobs: device label -> a new Backend, one per worker.
        self.backends: BackendFactory = backends or shared_backend(registry, runtime)
        self.preview_settings = preview_settings
        self.signals = Signals()

    # -- submitting --------------------------------------------------------------------

    def check_workflow(
        self, workflow: Mapping[str, Any], targets: list[str] | None = None
    ) -> dict[str, Any]:
        """Validate an API-format workflow; the coerced document, or
        :class:`WorkflowInvalidError` with ComfyUI's node_errors. With ``targets`` (output
        node ids), only those outputs and what they need are kept."""
        try:
            parsed = Workflow.from_api(dict(workflow))
        except MidrunError as exc:
            raise WorkflowInvalidError(str(exc), node_errors={}) from exc
        checked = validate(parsed, self.registry, targets, copy=False)
        if not checked.ok:
            raise WorkflowInvalidError.of(checked)
        document = checked.workflow.to_api()
        if targets:
            keep = set(checked.workflow.ancestors(list(checked.outputs)))
            document = {n: d for n, d in document.items() if n in keep}
        return document

    def job_row(
        self,
        workflow: Mapping[str, Any],
        *,
        kind: str = "workflow",
        job_id: str | None = None,
        owner: str | None = None,
        priority: int = 0,
        extra_data: Mapping[str, Any] | None = None,
        parameters: Mapping[str, Any] | None = None,
        workflow_id: str | None = None,
        batch_id: str | None = None,
        batch_index: int | None = None,
        targets: list[str] | None = None,
    ) -> dict[str, Any]:
        job_id = check_key(job_id) if job_id else new_id()
        preview_every(extra_data)  # refused here, not when the job starts
        if kind == "workflow":
            document = self.check_workflow(workflow, targets)
        else:
            graph = workflow.get("graph")
            if graph not in self.graphs:
                raise MidrunError(
                    f"No state graph named {graph!r} is registered with this server",
                    graph=graph,
                )
            document = {"graph": graph, "input": dict(workflow.get("input") or {})}
        return {
            "id": job_id,
            "kind": kind,
            "workflow": document,
            "owner": owner,
            "priority": priority,
            "extra_data": dict(extra_data or {}),
            "parameters_used": dict(parameters or {}),
            "workflow_id": workflow_id,
            "batch_id": batch_id,
            "batch_index": batch_index,
        }

    def submit(
        self,
        workflow: Mapping[str, Any],
        *,
        front: bool = False,
        breakpoints: Sequence[Breakpoint] = (),
        **fields: Any,
    ) -> Job:
        """Queue one job (an API workflow, or ``{"graph", "input"}`` with
        ``kind="stategraph"``). ``front`` puts it ahead of everything queued;
        ``breakpoints`` (parsed with :func:`midrun.jobs.breakpoints.parse_spec`) are set on
        it in the same transaction, so none can be missed by a worker starting it at once."""
        row = self.job_row(workflow, **fields)
        return self.enqueue([row], front=front, breakpoints={row["id"]: breakpoints})[0]

    def enqueue(
        self,
        rows: list[dict[str, Any]],
        *,
        front: bool = False,
        breakpoints: Mapping[str, Sequence[Breakpoint]] | None = None,
    ) -> list[Job]:
        from midrun.jobs.breakpoints import check_nodes, insert_breakpoint, job_nodes

        for row in rows:
            for bp in (breakpoints or {}).get(row["id"], ()):
                check_nodes(bp, job_nodes(row["kind"], row["workflow"]), f"job {row['id']}")
        try:
            with self.db.begin() as conn:
                number = self.store.next_number(conn, front=front)
                for i, row in enumerate(rows):
                    row["number"] = number - i if front else number + i
                self.store.insert(conn, rows)
                for row in rows:
                    self.store.record(conn, row["id"], EventKind.QUEUED,
                                      actor=row.get("owner"), number=row["number"])  # fmt: skip
                    for bp in (breakpoints or {}).get(row["id"], ()):
                        insert_breakpoint(self, conn, bp, job_id=row["id"],
                                          actor=row.get("owner"))  # fmt: skip
        except IntegrityError:
            taken = [r["id"] for r in rows if self._exists(r["id"])]
            if not taken:
                raise
            raise DuplicateJobId(taken[0]) from None
        created = [Job.from_mapping(row) for row in rows]
        self.signals.wake_workers(len(created))
        return created

    def _exists(self, job_id: str) -> bool:
        try:
            self.store.get(job_id)
        except JobNotFound:
            return False
        return True

    # -- reading -----------------------------------------------------------------------

    def get(self, job_id: str) -> Job:
        return self.store.get(job_id)

    def list(self, **filters: Any) -> list[Job]:
        return self.store.list(**filters)

    def debug_state(self, job_id: str) -> dict[str, Any]:
        return self.store.debug_state(job_id)

    def events(self, job_id: str | None = None) -> list[dict[str, Any]]:
        return self.store.events(job_id)

    def failures(
        self,
        *,
        reason: str | None = None,
        workflow_id: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 100,
    ) -> list[dict[str, Any]]:
        """Failed and aborted jobs with why, newest first; ``reason`` matches a substring
        of the abort reason or the error message (case-insensitive)."""
        query = (
            select(jobs.c.id, jobs.c.state, jobs.c.workflow_id, jobs.c.finished_at,
                   jobs.c.error, jobs.c.batch_id, job_debug_state.c.abort_reason)
            .join(job_debug_state, job_debug_state.c.job_id == jobs.c.id)
            .where(jobs.c.state.in_([JobState.FAILED.value, JobState.ABORTED.value]))
            .order_by(jobs.c.finished_at.desc())
        )  # fmt: skip
        if workflow_id is not None:
            query = query.where(jobs.c.workflow_id == workflow_id)
        if since is not None:
            query = query.where(jobs.c.finished_at >= since)
        if until is not None:
            query = query.where(jobs.c.finished_at <= until)
        with self.db.read() as conn:
            rows = conn.execute(query).all()
        out = []
        for r in rows:
            why = r.abort_reason if r.state == JobState.ABORTED.value else (
                (r.error or {}).get("message", ""))  # fmt: skip
            if reason is not None and reason.lower() not in (why or "").lower():
                continue
            finished = r.finished_at.isoformat() if r.finished_at else None
            out.append({"id": r.id, "state": r.state, "reason": why, "error": r.error,
                        "workflow_id": r.workflow_id, "batch_id": r.batch_id,
                        "finished_at": finished})  # fmt: skip
            if len(out) >= limit:
                break
        return out

    def wait(
        self,
        job_id: str,
        states: Iterable[JobState | str] | None = None,
        timeout: float = 60.0,
    ) -> Job:
        """Block until the job is in one of ``states`` (default: any terminal state)."""
        wanted = {JobState(s) for s in states} if states else None
        seen: list[Job] = []

        def arrived() -> bool:
            seen.append(self.get(job_id))
            return (seen[-1].state in wanted) if wanted else seen[-1].state.terminal

        if not self.bus.wait_until([job_id], arrived, timeout, self.settings.poll_interval):
            raise TimeoutError(f"job {job_id} is {seen[-1].state.value} after {timeout} s")
        return seen[-1]

    # -- control -----------------------------------------------------------------------

    def pause(self, job_id: str, *, actor: str | None = None, by: str = "user") -> Job:
        """A running job pauses at its next control point (state ``pausing`` until it
        has); a queued job is held in place (``paused``, nothing to save)."""
        with self.db.begin() as conn:
            job = self.store.lock(conn, job_id)
            check_action(job_id, "pause", job.state, job.request)
            target = JobState.PAUSING if job.state == JobState.RUNNING else JobState.PAUSED
            job = self.store.transition(conn, job, target, paused_by=by)
            # "pausing" is said before the commit: once it is committed the worker may
            # pause and say "paused" first, and a late "pausing" would undo that.
            self.store.record(conn, job_id, EventKind.PAUSING if target == JobState.PAUSING
                              else EventKind.PAUSED, actor=actor, by=by)  # fmt: skip
        self.signals.poke(job_id)
        return job

    def resume(
        self, job_id: str, *, actor: str | None = None, front: bool | None = None,
        step: StepMode | None = None,
    ) -> Job:  # fmt: skip
        """A paused job goes back to the queue; a worker continues it from the step it
        stopped at, applying pending edits from the next step. With ``step`` (a step mode
        of :mod:`midrun.debug.stops`) the run that continues it stops again where that
        step ends: a one-shot request on the row, taken by that run's hook."""
        front = self.settings.resume_first if front is None else front
        with self.db.begin() as conn:
            job = self.store.lock(conn, job_id)
            if step is None:
                check_action(job_id, "resume", job.state, job.request)
            else:
                check_action(job_id, "resume", job.state, job.request,
                             label=f"step {step.value}",
                             running="it is running; pause it (or let a breakpoint stop it) "
                             "first")  # fmt: skip
            values: dict[str, Any] = {"paused_by": None}
            if step is not None:
                values["request"] = step.command
            if front:
                values["number"] = self.store.next_number(conn, front=True)
            job = self.store.transition(conn, job, JobState.QUEUED, **values)
            pending = len(self.store.edits(job_id, status="pending", connection=conn))
            extra = {} if step is None else {"step_mode": step.value}
            # Said before the commit, as in pause: a worker may claim the job at once.
            self.store.record(conn, job_id, EventKind.RESUMED, actor=actor, front=bool(front),
                              pending_edits=pending, **extra)  # fmt: skip
        self.signals.wake_workers()
        return job

    def abort(self, job_id: str, reason: str = "", *, actor: str | None = None) -> Job:
        """End a job, keeping its partial results. Queued and paused jobs end at once;
        running ones at their next control point."""
        reason = reason or "aborted by user"
        with self.db.begin() as conn:
            job = self.store.lock(conn, job_id)
            check_action(job_id, "abort", job.state, job.request)
            if job.state in (JobState.QUEUED, JobState.PAUSED):
                job = self.store.transition(conn, job, JobState.ABORTED, paused_by=None)
                self.store.update_debug(conn, job_id, abort_reason=reason)
                self.store.record(conn, job_id, EventKind.ABORTED, actor=actor, reason=reason)
                self.count_batch(conn, job)
            else:
                job = self.store.transition(conn, job, None, request="abort",
                                            request_reason=reason)  # fmt: skip
                # Said before the commit, as in pause: the worker's "aborted" comes after.
                self.store.record(conn, job_id, EventKind.ABORTING, actor=actor, reason=reason)
        self.signals.poke(job_id)
        return job

    # -- edits -------------------------------------------------------------------------

    def edit(
        self,
        job_id: str,
        node_id: str,
        input_name: str,
        value: Any,
        *,
        actor: str | None = None,
    ) -> dict[str, Any]:
        """Change one input of a job's workflow. On a paused or queued job it becomes a
        pending edit (old -> new, undoable) applied when the job runs again; on a running
        job only what the run can take between steps is accepted (the current sampler's
        hot inputs, what feeds them, nodes not started yet) and it applies at the next
        control point; anything else is refused with "pause first".

        The check (a paused job's checkpoint loaded and the pending edits replayed on it)
        runs outside any write transaction; the short transaction that records the edit
        then checks that the job and its pending edits are still what was checked, and
        checks again if they are not."""
        for _ in range(EDIT_ATTEMPTS):
            with self.db.read() as conn:
                job = self.store.get(job_id, conn)
                pending = self.store.edits(job_id, status="pending", connection=conn)
            if len(pending) >= MAX_PENDING_EDITS:  # each check replays every pending edit
                raise JobConflict(job_id, "edit", job.state, f"it has {len(pending)} pending "
                                  "edits, the most a job holds; undo some, or resume it "
                                  "so they apply")  # fmt: skip
            old, step = self._check_edit(job, pending, node_id, input_name, value)
            with self.db.begin() as conn:
                locked = self.store.lock(conn, job_id)
                now_pending = self.store.edits(job_id, status="pending", connection=conn)
                if locked.version != job.version or _ids(now_pending) != _ids(pending):
                    continue  # it changed while the edit was checked: check it again
                edit_id = self.store.add_edit(conn, {
                    "job_id": job_id, "node_id": node_id, "input_name": input_name,
                    "old": old, "new": value, "actor": actor, "step": step,
                    "created_at": now()})  # fmt: skip
                self.store.record(conn, job_id, EventKind.EDITED, actor=actor, step=step,
                                 node_id=node_id, old=old, new=value, input=input_name,
                                 edit_id=edit_id)  # fmt: skip
                if job.state == JobState.RUNNING:
                    self.store.transition(conn, locked, None, request="edit")
                self.store.write_modified(conn, job_id)
                edits = self.store.edits(job_id, connection=conn)
            break
        else:
            raise JobConflict(job_id, "edit", job.state, "it kept changing while the edit "
                              "was checked; try again")  # fmt: skip
        self.signals.poke(job_id)
        return {"edit_id": edit_id, "edits": edits, "state": job.state.value}

    def undo(
        self, job_id: str, edit_id: int | None = None, *, actor: str | None = None
    ) -> list[dict[str, Any]]:
        """Withdraw one pending edit, or all of them; the job keeps its previous values."""
        with self.db.begin() as conn:
            job = self.store.lock(conn, job_id)
            check_action(job_id, "undo", job.state, job.request)
            pending = self.store.edits(job_id, status="pending", connection=conn)
            chosen = [e for e in pending if edit_id is None or e["id"] == edit_id]
            if edit_id is not None and not chosen:
                known = {e["id"]: e["status"] for e in self.store.edits(job_id, connection=conn)}
                why = (f"edit {edit_id} is {known[edit_id]}" if edit_id in known
                       else f"job {job_id} has no edit {edit_id}")  # fmt: skip
                raise JobConflict(job_id, "undo", job.state, why)
            for e in chosen:
                self.store.settle_edits(conn, [e["id"]], "undone")
                self.store.record(conn, job_id, EventKind.EDIT_UNDONE, actor=actor,
                                 node_id=e["node_id"], old=e["new"], new=e["old"],
                                 input=e["input_name"], edit_id=e["id"])  # fmt: skip
            self.store.write_modified(conn, job_id)
        return chosen

    def _check_edit(
        self, job: Job, pending: list[dict[str, Any]], node_id: str, input_name: str,
        value: Any,
    ) -> tuple[Any, int | None]:  # fmt: skip
        """Whether ``job`` (with its ``pending`` edits) takes the edit: its old value and
        the step it is made at, or the error that refuses it."""
        check_action(job.id, "edit", job.state, job.request)
        if job.kind != "workflow":
            raise EditError(f"Job {job.id} runs a state graph; its inputs are not edited")
        prompt = apply_edits(job.workflow, pending)
        if node_id not in prompt:
            raise EditError(f"Node {node_id!r} is not in job {job.id}'s workflow",
                            node_id=node_id)  # fmt: skip
        old = copy.deepcopy(prompt[node_id].get("inputs", {}).get(input_name))
        step = None
        if job.state in (JobState.PAUSED, JobState.PAUSING):
            step = self._check_on_checkpoint(job, prompt, pending, node_id, input_name, value)
        else:
            if job.state == JobState.RUNNING:
                self._check_running(job, prompt, node_id, input_name)
            check_edit(prompt, node_id, input_name, value, self.registry)
        return old, step

    def _check_on_checkpoint(
        self, job: Job, prompt: dict[str, Any], pending: list[dict[str, Any]], node_id: str,
        input_name: str, value: Any,
    ) -> int | None:  # fmt: skip
        """A paused job: the edit, after the pending ones, must apply to its saved run."""
        state = self.artifacts.load_run_state(job.id)
        if state is None:  # held before it started: a plain workflow edit
            check_edit(prompt, node_id, input_name, value, self.registry)
            return None
        for e in pending:
            state = edit_suspended(state, e["node_id"], e["input_name"], e["new"], self.registry)
        edit_suspended(state, node_id, input_name, value, self.registry)
        return job.checkpoint_step

    def _check_running(
        self, job: Job, prompt: dict[str, Any], node_id: str, input_name: str
    ) -> None:
        """A running job takes an edit only if it can reach the node in flight through
        that node's hot inputs (or goes to a node that has not started)."""
        signal = self.signals.get(job.id)
        current = signal.node_id if signal else (job.progress or {}).get("node")
        if current is None or current not in prompt:
            return
        node_type = self.registry[prompt[current]["class_type"]]
        changed = changed_inputs(Workflow.from_api(prompt), current, node_id, input_name)
        cold = cold_inputs(node_type, changed)
        if cold:
            raise JobConflict(
                job.id, "edit", job.state,
                f"node {current} ({prompt[current]['class_type']}) is running and its input "
                f"{cold[0]!r} cannot change between steps; pause first",
            )

    # -- batches -----------------------------------------------------------------------

    def count_batch(self, conn: Any, job: Job) -> None:
        """A job that reached a terminal state counts for its batch, if it has one (in
        the transaction that ended it)."""
        if job.batch_id is None or not job.state.terminal:
            return
        from midrun.jobs.batches import count_ended

        count_ended(conn, job)



#: How often :meth:`Jobs.edit` checks again when the job changed while it was checked.
EDIT_ATTEMPTS = 5
MAX_PENDING_EDITS = 256  # per job


def _ids(edits: list[dict[str, Any]]) -> list[int]:
    return [e["id"] for e in edits]
