"""The job system's front door: submit jobs, control them (pause, resume, abort, edit,
undo), read them back. The server and the CLI call these; workers run the jobs.

Every control call is one transaction that reads the job's row, checks the state machine
and compare-and-sets the row, so concurrent calls on one job each get exactly one answer:
applied, or a :class:`~midrun.jobs.states.JobConflict` carrying the state it found.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select, update

from midrun.core.errors import MidrunError
from midrun.core.ids import new_id
from midrun.debug.breakpoints import Breakpoint
from midrun.debug.stops import StepMode
from midrun.engine.edits import EditError, edit_suspended
from midrun.engine.executor import WorkflowInvalidError
from midrun.graph.registry import NodeRegistry
from midrun.graph.validation import validate
from midrun.graph.workflow import Workflow, as_link
from midrun.jobs.backends import BackendFactory
from midrun.jobs.backends import shared as shared_backend
from midrun.jobs.previews import preview_every
from midrun.jobs.records import Job, JobStore
from midrun.jobs.settings import JobSettings
from midrun.jobs.signals import EventBus, Signals
from midrun.jobs.states import JobConflict, JobState, check_action
from midrun.store.artifacts import ArtifactStore, LocalArtifacts, check_key
from midrun.store.database import Database
from midrun.store.schema import job_debug_state, job_edits, jobs, now


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
        self.store = JobStore(db)
        self.registry = registry
        self.data_dir = Path(data_dir)
        self.artifacts = artifacts or LocalArtifacts(self.data_dir / "artifacts")
        self.output_dir = Path(output_dir) if output_dir else self.data_dir / "output"
        self.settings = settings or JobSettings()
        self.graphs = dict(graphs or {})
        self.runtime = runtime  # with no `backends`, the one diffusion runtime of every worker
        # Where each worker runs its jobs: device label -> a new Backend, one per worker.
        self.backends: BackendFactory = backends or shared_backend(registry, runtime)
        self.preview_settings = preview_settings
        self.signals = Signals()
        self.bus = EventBus()

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
        with self.db.begin() as conn:
            number = self.store.next_number(conn, front=front)
            for i, row in enumerate(rows):
                row["number"] = number - i if front else number + i
            self.store.insert(conn, rows)
            for row in rows:
                self.store.event(conn, row["id"], "queued", actor=row.get("owner"))
                for bp in (breakpoints or {}).get(row["id"], ()):
                    insert_breakpoint(self, conn, bp, job_id=row["id"], actor=row.get("owner"))
        created = [Job.from_mapping(row) for row in rows]
        for job in created:
            self.bus.emit("queued", job_id=job.id, number=job.number)
        self.signals.wake_workers(len(created))
        return created

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
        deadline = time.monotonic() + timeout
        while True:
            job = self.get(job_id)
            if (job.state in wanted) if wanted else job.state.terminal:
                return job
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} is {job.state.value} after {timeout} s")
            time.sleep(0.01)

    # -- control -----------------------------------------------------------------------

    def pause(self, job_id: str, *, actor: str | None = None, by: str = "user") -> Job:
        """A running job pauses at its next control point (state ``pausing`` until it
        has); a queued job is held in place (``paused``, nothing to save)."""
        with self.db.begin() as conn:
            job = self.store.lock(conn, job_id)
            check_action(job_id, "pause", job.state, job.request)
            target = JobState.PAUSING if job.state == JobState.RUNNING else JobState.PAUSED
            job = self.store.transition(conn, job, target, paused_by=by)
            self.store.event(conn, job_id, "pause_requested" if target == JobState.PAUSING
                             else "paused", actor=actor, by=by)  # fmt: skip
            if target == JobState.PAUSING:
                # Said before the commit: once it is committed the worker may pause and
                # say "paused" first, and a late "pausing" would undo that for listeners.
                self.bus.emit("pausing", job_id=job_id)
        self.signals.poke(job_id)
        if target == JobState.PAUSED:
            self.bus.emit("paused", job_id=job_id)
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
            check_action(job_id, "resume", job.state, job.request,
                         label=None if step is None else f"step {step.value}")  # fmt: skip
            values: dict[str, Any] = {"paused_by": None}
            if step is not None:
                values["request"] = step.command
            if front:
                values["number"] = self.store.next_number(conn, front=True)
            job = self.store.transition(conn, job, JobState.QUEUED, **values)
            pending = len(self.store_edits(conn, job_id, "pending"))
            extra = {} if step is None else {"step_mode": step.value}
            self.store.event(conn, job_id, "resumed", actor=actor, front=bool(front),
                             pending_edits=pending, **extra)  # fmt: skip
            # Before the commit, as in pause: a worker may claim the job at once after it.
            self.bus.emit("resumed", job_id=job_id, **extra)
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
                self.store.event(conn, job_id, "aborted", actor=actor, reason=reason)
                self._count_batch(conn, job)
                ended = True
            else:
                job = self.store.transition(conn, job, None, request="abort",
                                            request_reason=reason)  # fmt: skip
                self.store.event(conn, job_id, "abort_requested", actor=actor, reason=reason)
                ended = False
                # Before the commit, as in pause: the worker's "aborted" comes after it.
                self.bus.emit("aborting", job_id=job_id, reason=reason)
        self.signals.poke(job_id)
        if ended:
            self.bus.emit("aborted", job_id=job_id, reason=reason)
        return job

    # -- edits -------------------------------------------------------------------------

    def store_edits(self, conn: Any, job_id: str, status: str | None = None) -> list[Any]:
        query = select(job_edits).where(job_edits.c.job_id == job_id).order_by(job_edits.c.id)
        if status is not None:
            query = query.where(job_edits.c.status == status)
        return list(conn.execute(query))

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
        control point; anything else is refused with "pause first"."""
        with self.db.begin() as conn:
            job = self.store.lock(conn, job_id)
            check_action(job_id, "edit", job.state, job.request)
            if job.kind != "workflow":
                raise EditError(f"Job {job_id} runs a state graph; its inputs are not edited")
            pending = self.store_edits(conn, job_id, "pending")
            prompt = apply_edits(job.workflow, pending)
            if node_id not in prompt:
                raise EditError(f"Node {node_id!r} is not in job {job_id}'s workflow",
                                node_id=node_id)  # fmt: skip
            old = copy.deepcopy(prompt[node_id].get("inputs", {}).get(input_name))
            step = None
            if job.state in (JobState.PAUSED, JobState.PAUSING):
                step = self._check_on_checkpoint(job, pending, node_id, input_name, value)
            elif job.state == JobState.RUNNING:
                self._check_running(job, prompt, node_id, input_name)
                self._check_static(job, prompt, node_id, input_name, value)
            else:
                self._check_static(job, prompt, node_id, input_name, value)
            row = {"job_id": job_id, "node_id": node_id, "input_name": input_name, "old": old,
                   "new": value, "status": "pending", "actor": actor, "step": step,
                   "created_at": now()}  # fmt: skip
            edit_id = conn.execute(job_edits.insert().returning(job_edits.c.id), row).scalar()
            self.store.event(conn, job_id, "edited", actor=actor, step=step, node_id=node_id,
                             old=old, new=value, input=input_name, edit_id=edit_id)  # fmt: skip
            if job.state == JobState.RUNNING:
                self.store.transition(conn, job, None, request="edit")
            self.write_modified(conn, job_id)
            edits = [edit_dict(r) for r in self.store_edits(conn, job_id)]
        self.signals.poke(job_id)
        self.bus.emit("edited", job_id=job_id, edit_id=edit_id, node_id=node_id,
                      input=input_name, old=old, new=value)  # fmt: skip
        return {"edit_id": edit_id, "edits": edits, "state": job.state.value}

    def undo(
        self, job_id: str, edit_id: int | None = None, *, actor: str | None = None
    ) -> list[dict[str, Any]]:
        """Withdraw one pending edit, or all of them; the job keeps its previous values."""
        with self.db.begin() as conn:
            job = self.store.lock(conn, job_id)
            check_action(job_id, "undo", job.state, job.request)
            pending = self.store_edits(conn, job_id, "pending")
            chosen = [r for r in pending if edit_id is None or r.id == edit_id]
            if edit_id is not None and not chosen:
                known = {r.id: r.status for r in self.store_edits(conn, job_id)}
                why = (f"edit {edit_id} is {known[edit_id]}" if edit_id in known
                       else f"job {job_id} has no edit {edit_id}")  # fmt: skip
                raise JobConflict(job_id, "undo", job.state, why)
            for r in chosen:
                conn.execute(
                    update(job_edits)
                    .where(job_edits.c.id == r.id, job_edits.c.status == "pending")
                    .values(status="undone")
                )
                self.store.event(conn, job_id, "edit_undone", actor=actor, node_id=r.node_id,
                                 old=r.new, new=r.old, input=r.input_name,
                                 edit_id=r.id)  # fmt: skip
            self.write_modified(conn, job_id)
            undone = [edit_dict(r) for r in chosen]
        for e in undone:
            self.bus.emit("edit_undone", job_id=job_id, edit_id=e["id"])
        return undone

    def write_modified(self, conn: Any, job_id: str) -> None:
        """``modified_params_json``: per ``node.input``, the first old value, the latest
        new one and the edits behind it (pending and applied; undone ones drop out)."""
        modified: dict[str, Any] = {}
        for r in self.store_edits(conn, job_id):
            if r.status not in ("pending", "applied"):
                continue
            key = f"{r.node_id}.{r.input_name}"
            entry = modified.setdefault(key, {"old": r.old, "edits": []})
            entry.update(new=r.new, status=r.status, modified_mid_run=True)
            entry["edits"].append(r.id)
        self.store.update_debug(conn, job_id, modified_params_json=modified)

    def _check_static(
        self, job: Job, prompt: dict[str, Any], node_id: str, input_name: str, value: Any
    ) -> None:
        """Types, ranges and choices: the workflow with the edit must validate."""
        inputs = prompt[node_id].setdefault("inputs", {})
        if as_link(inputs.get(input_name)) is not None:
            raise EditError(
                f"Input {input_name!r} of node {node_id} is connected to another node; "
                "edit that node instead", node_id=node_id, input_name=input_name,
            )
        node_type = self.registry.get(prompt[node_id]["class_type"])
        if node_type is None or node_type.input(input_name) is None:
            raise EditError(f"Node {node_id} has no input {input_name!r}", node_id=node_id,
                            input_name=input_name)  # fmt: skip
        edited = copy.deepcopy(prompt)
        edited[node_id]["inputs"][input_name] = value
        checked = validate(Workflow.from_api(edited), self.registry)
        if not checked.ok:
            errors = checked.node_errors.get(node_id, {}).get("errors") or []
            reason = errors[0]["message"] if errors else (
                checked.error.message if checked.error else "invalid")  # fmt: skip
            raise EditError(f"Edit of {node_id}.{input_name} refused: {reason}",
                            node_id=node_id, input_name=input_name,
                            node_errors=checked.node_errors)  # fmt: skip

    def _check_on_checkpoint(
        self, job: Job, pending: list[Any], node_id: str, input_name: str, value: Any
    ) -> int | None:
        """A paused job: the edit, after the pending ones, must apply to its saved run."""
        state = self.artifacts.load_run_state(job.id)
        if state is None:  # held before it started: a plain workflow edit
            self._check_static(job, apply_edits(job.workflow, pending), node_id, input_name,
                               value)  # fmt: skip
            return None
        for r in pending:
            state = edit_suspended(state, r.node_id, r.input_name, r.new, self.registry)
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
        workflow = Workflow.from_api(prompt)
        node_type = self.registry[prompt[current]["class_type"]]
        if node_id == current:
            changed = {input_name}
        else:
            upstream = set(workflow.ancestors([current])) - {current}
            if node_id not in upstream:
                return  # downstream or parallel: it has not consumed anything yet
            feeding = workflow.descendants(node_id) | {node_id}
            changed = {n for n, link in workflow[current].links() if link.node_id in feeding}
        cold = sorted(changed - node_type.hot_inputs)
        if cold:
            raise JobConflict(
                job.id, "edit", job.state,
                f"node {current} ({prompt[current]['class_type']}) is running and its input "
                f"{cold[0]!r} cannot change between steps; pause first",
            )

    # -- batches -----------------------------------------------------------------------

    def _count_batch(self, conn: Any, job: Job) -> None:
        if job.batch_id is None:
            return
        from midrun.jobs.batches import count_ended

        count_ended(conn, job)


def edit_dict(row: Any) -> dict[str, Any]:
    data = dict(row._mapping)
    data["created_at"] = data["created_at"].isoformat()
    return data


def apply_edits(workflow: Mapping[str, Any], edits: Iterable[Any]) -> dict[str, Any]:
    """The workflow with ``edits`` (rows with node_id, input_name, new) applied in order."""
    prompt = copy.deepcopy(dict(workflow))
    for e in edits:
        prompt.setdefault(e.node_id, {}).setdefault("inputs", {})[e.input_name] = copy.deepcopy(
            e.new
        )
    return prompt
