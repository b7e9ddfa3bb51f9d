"""Batches: N jobs from one workflow with variations (seeds random / increment / fixed,
list cycling, numeric sweeps), progress counts, and "stop remaining"."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import suppress
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, insert, select, update

from midrun.core.errors import MidrunError, ParameterError
from midrun.core.events import EventKind
from midrun.core.ids import new_id
from midrun.graph.variations import (
    MAX_BATCH,
    Variation,
    expand_batch,
    parse_variation,
    variation_json,
)
from midrun.graph.workflow import Workflow
from midrun.jobs.records import Job
from midrun.jobs.states import JobConflict, JobState
from midrun.store.schema import batches, jobs, now

if TYPE_CHECKING:
    from midrun.jobs.service import Jobs


class BatchNotFound(MidrunError):
    type = "batch_not_found"


def submit_batch(
    service: Jobs,
    workflow: Mapping[str, Any],
    *,
    count: int | None = None,
    variations: Sequence[Mapping[str, Any] | Variation] = (),
    owner: str | None = None,
    priority: int = 0,
    workflow_id: str | None = None,
) -> dict[str, Any]:
    """Queue the batch's jobs in one transaction; returns the batch. ``variations`` are
    :func:`~midrun.graph.variations.parse_variation`'s JSON form or its results."""
    parsed = [parse_variation(v, f"variations[{i}]") if isinstance(v, Mapping) else v
              for i, v in enumerate(variations)]
    document = service.check_workflow(workflow)
    expanded = expand_batch(Workflow.from_api(document), service.registry, parsed, count)
    if len(expanded) > MAX_BATCH:
        raise ParameterError(f"A batch holds at most {MAX_BATCH} jobs, asked {len(expanded)}")
    batch_id = new_id()
    rows = [
        service.job_row(w.to_api(), owner=owner, priority=priority, parameters=used,
                        workflow_id=workflow_id, batch_id=batch_id,
                        batch_index=i)
        for i, (w, used) in enumerate(expanded)
    ]
    with service.db.begin() as conn:
        conn.execute(
            insert(batches),
            {"id": batch_id, "workflow_id": workflow_id, "owner": owner,
             "total_count": len(rows), "status": "running", "created_at": now(),
             "variations": [variation_json(v) for v in parsed]},
        )
    service.enqueue(rows)
    service.bus.emit(EventKind.BATCH_PROGRESS, batch_id=batch_id, completed=0, failed=0,
                     total=len(rows))  # fmt: skip
    return get_batch(service, batch_id)


def count_ended(conn: Connection, job: Job) -> None:
    """A batch job reached a terminal state: count it, and close the batch when all have."""
    column = "completed_count" if job.state == JobState.COMPLETED else "failed_count"
    conn.execute(
        update(batches)
        .where(batches.c.id == job.batch_id)
        .values({column: getattr(batches.c, column) + 1})
    )
    row = conn.execute(select(batches).where(batches.c.id == job.batch_id)).first()
    ended = row is not None and row.completed_count + row.failed_count >= row.total_count
    if ended and row is not None and row.status == "running":
        conn.execute(
            update(batches).where(batches.c.id == job.batch_id).values(status="completed")
        )


def get_batch(service: Jobs, batch_id: str) -> dict[str, Any]:
    with service.db.read() as conn:
        row = conn.execute(select(batches).where(batches.c.id == batch_id)).first()
        if row is None:
            raise BatchNotFound(f"No batch {batch_id!r}", batch_id=batch_id)
        members = conn.execute(
            select(jobs.c.id, jobs.c.state, jobs.c.batch_index, jobs.c.parameters_used,
                   jobs.c.outputs, jobs.c.started_at)
            .where(jobs.c.batch_id == batch_id)
            .order_by(jobs.c.batch_index)
        ).all()
    data = dict(row._mapping)
    data["created_at"] = data["created_at"].isoformat()
    data["jobs"] = [
        {**dict(m._mapping), "started": m.started_at is not None, "started_at": None}
        for m in members
    ]
    data["states"] = {}
    for m in members:
        data["states"][m.state] = data["states"].get(m.state, 0) + 1
    return data


def stop_batch(
    service: Jobs, batch_id: str, *, include_running: bool = False, actor: str | None = None
) -> dict[str, Any]:
    """Abort the batch's jobs that have not started (queued or held), and with
    ``include_running`` the started ones too (running, pausing, paused). Finished jobs
    are kept."""
    batch = get_batch(service, batch_id)
    started = {JobState.RUNNING.value, JobState.PAUSING.value, JobState.PAUSED.value}

    def stoppable(member: dict[str, Any]) -> bool:
        if member["state"] == JobState.QUEUED.value:
            return True
        if member["state"] == JobState.PAUSED.value and not member["started"]:
            return True
        return include_running and member["state"] in started
    with service.db.begin() as conn:
        conn.execute(update(batches).where(batches.c.id == batch_id).values(status="stopped"))
        service.store.record(conn, None, EventKind.BATCH_STOPPED, actor=actor, batch_id=batch_id,
                            include_running=include_running)  # fmt: skip
    for member in batch["jobs"]:
        if stoppable(member):
            # JobConflict: it ended (or is ending) on its own meanwhile.
            with suppress(JobConflict):
                service.abort(member["id"], "batch stopped", actor=actor)
    return get_batch(service, batch_id)
