"""Job rows and the SQL that reads and writes them. Every state change goes through
:meth:`JobStore.transition`, a compare-and-set on the row's version: of two racing
requests exactly one applies, the other sees the new state."""

from __future__ import annotations

import os
import socket
import uuid
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, and_, delete, func, insert, or_, select, update

from midrun.core.events import EventKind
from midrun.jobs.signals import EventBus
from midrun.jobs.states import JobConflict, JobNotFound, JobState, check_transition
from midrun.store.database import Database, after_commit
from midrun.store.schema import (
    job_debug_state,
    job_edits,
    job_events,
    job_files,
    jobs,
    now,
    workers,
)

#: Written into every audit event's data, so a process tailing the log (the server's event
#: relay) can tell events it published itself from those of workers elsewhere.
ORIGIN = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"

def announced(job_id: str | None, data: dict[str, Any], **columns: Any) -> dict[str, Any]:
    """What an event carries when it is announced (without its ``type``): its data, its
    job and those of the audit row's columns (step, node_id, actor, old, new) that are
    set. The store announces its own rows so; the relay, other processes' rows."""
    payload = {k: v for k, v in data.items() if k != "origin"}
    if job_id is not None:
        payload["job_id"] = job_id
    payload.update((name, value) for name, value in columns.items() if value is not None)
    return payload


def _listed() -> Any:
    ended = [s.value for s in JobState if s.terminal]
    return or_(jobs.c.hidden_at.is_(None), jobs.c.state.not_in(ended))


PRIORITY_ORDER = (jobs.c.priority.desc(), jobs.c.number, jobs.c.queued_at, jobs.c.id)


@dataclass(slots=True)
class Job:
    """One row of ``jobs``."""

    id: str
    number: int
    kind: str
    workflow: dict[str, Any]
    state: JobState
    version: int
    workflow_id: str | None = None
    parameters_used: dict[str, Any] | None = None
    extra_data: dict[str, Any] | None = None
    batch_id: str | None = None
    batch_index: int | None = None
    owner: str | None = None
    priority: int = 0
    request: str | None = None
    request_reason: str | None = None
    paused_by: str | None = None
    worker_id: str | None = None
    queued_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    stint_started_at: datetime | None = None
    active_seconds: float = 0.0
    checkpoint_step: int | None = None
    progress: dict[str, Any] | None = None
    outputs: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    hidden_at: datetime | None = None
    crashes: int = 0  # workers that died while running it

    @classmethod
    def from_row(cls, row: Any) -> Job:
        return cls.from_mapping(row._mapping)

    @classmethod
    def from_mapping(cls, data: Any) -> Job:
        """From a row, or from the values a row was just inserted with."""
        values = {f.name: data[f.name] for f in fields(cls) if f.name in data}
        values["state"] = JobState(values["state"])
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            out[f.name] = value.isoformat() if isinstance(value, datetime) else value
        out["state"] = self.state.value
        return out

    def active_time(self, at: datetime | None = None) -> float:
        """Seconds spent running, excluding queued and paused time."""
        extra = 0.0
        if self.state in (JobState.RUNNING, JobState.PAUSING) and self.stint_started_at:
            extra = ((at or now()) - self.stint_started_at).total_seconds()
        return self.active_seconds + extra


class JobStore:
    """SQL access for jobs, their debug state, edits and audit events."""

    def __init__(self, db: Database, bus: EventBus | None = None) -> None:
        self.db = db
        self.bus = bus if bus is not None else EventBus()

    # -- reading -----------------------------------------------------------------------

    def get(self, job_id: str, connection: Connection | None = None) -> Job:
        query = select(jobs).where(jobs.c.id == job_id)
        if connection is None:
            with self.db.read() as conn:
                row = conn.execute(query).first()
        else:
            row = connection.execute(query).first()
        if row is None:
            raise JobNotFound(job_id)
        return Job.from_row(row)

    def lock(self, connection: Connection, job_id: str) -> Job:
        """Read a job for update (a row lock on PostgreSQL; SQLite holds the write lock)."""
        query = select(jobs).where(jobs.c.id == job_id)
        if self.db.dialect == "postgresql":
            query = query.with_for_update()
        row = connection.execute(query).first()
        if row is None:
            raise JobNotFound(job_id)
        return Job.from_row(row)

    def list(
        self,
        *,
        states: list[JobState] | None = None,
        batch_id: str | None = None,
        owner: str | None = None,
        limit: int | None = None,
        offset: int = 0,
        newest_first: bool = False,
        oldest_first: bool = False,
        listed_only: bool = False,
    ) -> list[Job]:
        """Jobs by priority (or newest first); ``listed_only`` leaves out ended jobs hidden
        from the history listing."""
        query = select(jobs)
        if states:
            query = query.where(jobs.c.state.in_([s.value for s in states]))
        if listed_only:
            query = query.where(_listed())
        if batch_id is not None:
            query = query.where(jobs.c.batch_id == batch_id)
        if owner is not None:
            query = query.where(jobs.c.owner == owner)
        if newest_first:
            query = query.order_by(jobs.c.queued_at.desc(), jobs.c.number.desc())
        elif oldest_first:
            query = query.order_by(jobs.c.queued_at, jobs.c.number)
        else:
            query = query.order_by(*PRIORITY_ORDER)
        query = query.offset(offset)
        if limit is not None:
            query = query.limit(limit)
        with self.db.read() as conn:
            return [Job.from_row(r) for r in conn.execute(query)]

    def count(self, *, states: list[JobState] | None = None, listed_only: bool = False,
              owner: str | None = None) -> int:  # fmt: skip
        query = select(func.count()).select_from(jobs)
        if owner is not None:
            query = query.where(jobs.c.owner == owner)
        if states:
            query = query.where(jobs.c.state.in_([s.value for s in states]))
        if listed_only:
            query = query.where(_listed())
        with self.db.read() as conn:
            return int(conn.execute(query).scalar() or 0)

    def last_event_id(self) -> int:
        with self.db.read() as conn:
            return int(conn.execute(select(func.max(job_events.c.id))).scalar() or 0)

    def requests(self, connection: Connection, job_id: str) -> Any:
        """What a job's row asks of its run: ``state``, ``request``, ``request_reason``
        (None if the row is gone)."""
        return connection.execute(
            select(jobs.c.state, jobs.c.request, jobs.c.request_reason).where(jobs.c.id == job_id)
        ).first()

    def debug_state(self, job_id: str) -> dict[str, Any]:
        with self.db.read() as conn:
            row = conn.execute(
                select(job_debug_state).where(job_debug_state.c.job_id == job_id)
            ).first()
        if row is None:
            raise JobNotFound(job_id)
        data = dict(row._mapping)
        for key in ("created_at", "updated_at"):
            data[key] = data[key].isoformat()
        return data

    def events(self, job_id: str | None = None, *, since_id: int = 0) -> list[dict[str, Any]]:
        query = select(job_events).where(job_events.c.id > since_id).order_by(job_events.c.id)
        if job_id is not None:
            query = query.where(job_events.c.job_id == job_id)
        with self.db.read() as conn:
            rows = conn.execute(query).all()
        return [{**dict(r._mapping), "at": r.at.isoformat()} for r in rows]

    def edits(self, job_id: str, *, status: str | None = None,
              connection: Connection | None = None) -> list[dict[str, Any]]:  # fmt: skip
        """The job's edits in the order they were made (only those with ``status``), read
        in ``connection``'s transaction when one is given."""
        query = select(job_edits).where(job_edits.c.job_id == job_id).order_by(job_edits.c.id)
        if status is not None:
            query = query.where(job_edits.c.status == status)
        if connection is None:
            with self.db.read() as conn:
                rows = conn.execute(query).all()
        else:
            rows = connection.execute(query).all()
        return [{**dict(r._mapping), "created_at": r.created_at.isoformat()} for r in rows]

    # -- writing -----------------------------------------------------------------------

    def next_number(self, connection: Connection, *, front: bool = False) -> int:
        if front:
            lowest = connection.execute(select(func.min(jobs.c.number))).scalar()
            return (lowest or 0) - 1
        highest = connection.execute(select(func.max(jobs.c.number))).scalar()
        return (highest or 0) + 1

    def insert(self, connection: Connection, rows: list[dict[str, Any]]) -> None:
        """Insert new queued jobs (with their debug-state rows)."""
        if not rows:
            return
        at = now()
        for row in rows:
            row.setdefault("state", JobState.QUEUED.value)
            row.setdefault("queued_at", at)
            row.setdefault("version", 1)
        connection.execute(insert(jobs), rows)
        connection.execute(
            insert(job_debug_state),
            [{"job_id": r["id"], "created_at": at, "updated_at": at} for r in rows],
        )

    def transition(
        self,
        connection: Connection,
        job: Job,
        target: JobState | None,
        **values: Any,
    ) -> Job:
        """Compare-and-set: apply ``values`` (and the move to ``target``) if the row still
        has ``job.version``; otherwise raise :class:`JobConflict` with the current state.
        Running stretches are added to ``active_seconds`` when a job stops running."""
        if target is not None and target != job.state:
            check_transition(job.id, job.state, target)
            values["state"] = target.value
            at = now()
            if target == JobState.RUNNING:
                values.setdefault("stint_started_at", at)
                if job.started_at is None:
                    values.setdefault("started_at", at)
            elif job.state in (JobState.RUNNING, JobState.PAUSING) and job.stint_started_at:
                values["active_seconds"] = job.active_time(at)
                values["stint_started_at"] = None
            if target.terminal:
                values.setdefault("finished_at", at)
                values.setdefault("request", None)
        values["version"] = job.version + 1
        result = connection.execute(
            update(jobs).where(and_(jobs.c.id == job.id, jobs.c.version == job.version)),
            values,
        )
        if result.rowcount != 1:
            current = self.get(job.id, connection)
            raise JobConflict(
                job.id, "update", current.state,
                f"it changed meanwhile (now {current.state.value})",
            )
        merged = {f.name: getattr(job, f.name) for f in fields(job)}
        merged.update(values)
        merged["state"] = JobState(merged["state"])
        return Job(**merged)

    def hide(self, connection: Connection, states: list[str], ids: list[str] | None,
             owner: str | None) -> None:  # fmt: skip
        """Hide jobs in ``states`` from listings: those of ``ids`` (all with None), only
        ``owner``'s unless it is None (not a state change: the version stays)."""
        query = update(jobs).where(jobs.c.state.in_(states), jobs.c.hidden_at.is_(None))
        if ids is not None:
            query = query.where(jobs.c.id.in_(ids))
        if owner is not None:
            query = query.where(jobs.c.owner == owner)
        connection.execute(query.values(hidden_at=now()))

    def set_workflow(self, connection: Connection, job_id: str, workflow: Any) -> None:
        """The job's workflow with its applied edits (not a state change: the version stays)."""
        connection.execute(update(jobs).where(jobs.c.id == job_id).values(workflow=workflow))

    def index_files(self, connection: Connection, job: Job, outputs: Any) -> None:
        """Record whose the files named by ``outputs`` (the job's, as it ends or pauses)
        are: what :meth:`owns_file` answers from."""
        connection.execute(delete(job_files).where(job_files.c.job_id == job.id))
        rows = [
            {"job_id": job.id, "type": kind, "subfolder": folder, "filename": name,
             "owner": job.owner}
            for kind, folder, name in output_files(outputs)
        ]  # fmt: skip
        if rows:
            connection.execute(insert(job_files), rows)

    def owns_file(self, owner: str | None, kind: str, subfolder: str, filename: str) -> bool:
        """Whether a job of ``owner`` names this file in its outputs."""
        query = select(job_files.c.job_id).where(
            job_files.c.filename == filename, job_files.c.type == kind,
            job_files.c.subfolder == file_folder(subfolder), job_files.c.owner == owner,
        ).limit(1)  # fmt: skip
        with self.db.read() as connection:
            return connection.execute(query).first() is not None

    def set_progress(self, connection: Connection, job_id: str, progress: dict[str, Any]) -> None:
        """Where the running job stands (not a state change: the version stays)."""
        connection.execute(update(jobs).where(jobs.c.id == job_id).values(progress=progress))

    def set_checkpoint_step(self, connection: Connection, job_id: str, step: int) -> None:
        """The step of the job's last checkpoint (not a state change: the version stays)."""
        connection.execute(update(jobs).where(jobs.c.id == job_id)
                           .values(checkpoint_step=step))  # fmt: skip

    def add_edit(self, connection: Connection, row: dict[str, Any]) -> int:
        """A new pending edit; its id."""
        return int(connection.execute(job_edits.insert().returning(job_edits.c.id),
                                      {**row, "status": "pending"}).scalar_one())  # fmt: skip

    def settle_edits(self, connection: Connection, ids: list[int], status: str, *,
                     step: int | None = None, reason: str | None = None) -> int:  # fmt: skip
        """Move pending edits to ``status`` (``applied``, ``refused`` or ``undone``); edits
        no longer pending are left alone. Returns how many moved."""
        if not ids:
            return 0
        values: dict[str, Any] = {"status": status}
        if status == "applied":
            values["applied_step"] = step
        if reason is not None:
            values["reason"] = reason
        moved = connection.execute(update(job_edits).where(
            job_edits.c.id.in_(ids), job_edits.c.status == "pending").values(**values))
        return int(moved.rowcount or 0)

    def write_modified(self, connection: Connection, job_id: str) -> None:
        """``modified_params_json``: per ``node.input``, the first old value, the latest
        new one and the edits behind it (pending and applied; undone ones drop out)."""
        modified: dict[str, Any] = {}
        for e in self.edits(job_id, connection=connection):
            if e["status"] not in ("pending", "applied"):
                continue
            key = f"{e['node_id']}.{e['input_name']}"
            entry = modified.setdefault(key, {"old": e["old"], "edits": []})
            entry.update(new=e["new"], status=e["status"], modified_mid_run=True)
            entry["edits"].append(e["id"])
        self.update_debug(connection, job_id, modified_params_json=modified)

    def update_debug(self, connection: Connection, job_id: str, **values: Any) -> None:
        connection.execute(
            update(job_debug_state).where(job_debug_state.c.job_id == job_id),
            {**values, "updated_at": now()},
        )

    def read_debug(self, connection: Connection, job_id: str) -> dict[str, Any]:
        row = connection.execute(
            select(job_debug_state).where(job_debug_state.c.job_id == job_id)
        ).first()
        if row is None:
            raise JobNotFound(job_id)
        return dict(row._mapping)

    def record(
        self,
        connection: Connection,
        job_id: str | None,
        kind: EventKind,
        *,
        actor: str | None = None,
        step: int | None = None,
        node_id: str | None = None,
        old: Any = None,
        new: Any = None,
        **data: Any,
    ) -> None:
        """The one way an event happens: append it to the audit log (the table refuses
        updates and deletes) in the caller's transaction and announce it on the bus, a
        request's intent at once, anything else once the transaction has committed."""
        kind = EventKind(kind)
        connection.execute(
            insert(job_events),
            {"job_id": job_id, "kind": kind.value, "actor": actor, "at": now(), "step": step,
             "node_id": node_id, "old": old, "new": new, "data": {**data, "origin": ORIGIN}},
        )  # fmt: skip
        payload = announced(job_id, data, step=step, node_id=node_id, actor=actor, old=old,
                            new=new)  # fmt: skip
        if kind.announced_first:
            self.bus.emit(kind, **payload)
        else:
            after_commit(connection, lambda: self.bus.emit(kind, **payload))

    def claim(self, connection: Connection, worker_id: str) -> Job | None:
        """Take the first queued job (priority, then queue number) for ``worker_id``.
        PostgreSQL skips rows other workers have locked; SQLite's write lock serialises."""
        query = (
            select(jobs)
            .where(jobs.c.state == JobState.QUEUED.value)
            .order_by(*PRIORITY_ORDER)
            .limit(1)
        )
        if self.db.dialect == "postgresql":
            query = query.with_for_update(skip_locked=True)
        row = connection.execute(query).first()
        if row is None:
            return None
        job = Job.from_row(row)
        return self.transition(connection, job, JobState.RUNNING, worker_id=worker_id)

    def stale_running(self, connection: Connection, live_workers: set[str]) -> list[Job]:
        """Running or pausing jobs whose worker is not among ``live_workers``, or is but
        runs something else (it let go of the job: its claim and its ``job_id`` are set in
        one transaction, and the job leaves running before ``job_id`` is cleared)."""
        query = (
            select(jobs)
            .outerjoin(workers, workers.c.id == jobs.c.worker_id)
            .where(jobs.c.state.in_([JobState.RUNNING.value, JobState.PAUSING.value]))
        )
        abandoned = or_(workers.c.id.is_(None), workers.c.job_id.is_distinct_from(jobs.c.id))
        if live_workers:
            gone = or_(jobs.c.worker_id.is_(None), jobs.c.worker_id.not_in(live_workers))
            query = query.where(or_(gone, abandoned))
        # In id order, as every caller that locks several job rows takes them.
        return [Job.from_row(r) for r in connection.execute(query.order_by(jobs.c.id))]


MAX_FILES = 10_000  # files indexed per job


def file_folder(subfolder: str) -> str:
    """A subfolder as the index keeps it: slash-separated, no leading, trailing or "."."""
    parts = [p for p in subfolder.replace("\\", "/").split("/") if p not in ("", ".")]
    return "/".join(parts)


def output_files(outputs: Any) -> list[tuple[str, str, str]]:
    """``(type, subfolder, filename)`` of each file a job's outputs name: ComfyUI's UI
    results, ``{node_id: {"images": [{"filename", "subfolder", "type"}, ...], ...}}``."""
    found: set[tuple[str, str, str]] = set()
    if not isinstance(outputs, dict):
        return []
    for ui in outputs.values():
        if not isinstance(ui, dict):
            continue
        for items in ui.values():
            for item in items if isinstance(items, list) else ():
                if isinstance(item, dict) and isinstance(item.get("filename"), str):
                    kind, folder = item.get("type") or "output", item.get("subfolder") or ""
                    if isinstance(kind, str) and isinstance(folder, str):
                        found.add((kind[:20], file_folder(folder)[:500], item["filename"][:500]))
    return sorted(found)[:MAX_FILES]
