"""The global pipeline pause: one call freezes every worker. No new job, node or step
starts; steps in flight complete; every running job ends paused (checkpointed, its worker
free) or, if one cannot reach a control point in time, none does and the call says why.
Jobs submitted meanwhile wait in the queue. Resume continues exactly the jobs it paused."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy import select, update

from midrun.core.errors import MidrunError
from midrun.core.events import EventKind
from midrun.jobs.states import JobState
from midrun.store.schema import jobs, now, pipeline, workers

if TYPE_CHECKING:
    from midrun.jobs.service import Jobs


class PipelineConflict(MidrunError):
    type = "pipeline_state_conflict"


class PipelinePauseFailed(MidrunError):
    """Some running job did not reach a control point in time; nothing stays paused."""

    type = "pipeline_pause_failed"


def status(service: Jobs) -> dict[str, Any]:
    with service.db.read() as conn:
        row = conn.execute(select(pipeline).where(pipeline.c.id == 1)).one()
        pending = conn.execute(
            select(jobs.c.id).where(jobs.c.state == JobState.QUEUED.value).order_by(jobs.c.number)
        ).scalars().all()
        live = conn.execute(select(workers.c.id, workers.c.job_id, workers.c.device)
                            .where(workers.c.stopped_at.is_(None))).all()  # fmt: skip
    snapshot = dict(row.snapshot or {})
    return {
        "state": row.state,
        "paused_at": row.paused_at.isoformat() if row.paused_at else None,
        "actor": row.actor,
        "paused_jobs": snapshot.get("jobs", []),
        "workers_at_pause": snapshot.get("workers", {}),
        "pending": list(pending),
        "workers": [{"id": w.id, "device": w.device, "job_id": w.job_id} for w in live],
    }


def pause_pipeline(
    service: Jobs, *, actor: str | None = None, timeout: float | None = None
) -> dict[str, Any]:
    """Freeze the pipeline; returns its status once every job that was running is paused."""
    timeout = service.settings.pipeline_pause_timeout if timeout is None else timeout
    with service.db.begin() as conn:
        query = select(pipeline).where(pipeline.c.id == 1)
        if service.db.dialect == "postgresql":
            query = query.with_for_update()  # waits for claims in progress to commit
        row = conn.execute(query).one()
        if row.state != "running":
            raise PipelineConflict("The pipeline is already paused", state=row.state)
        running = [
            service.store.lock(conn, job_id)
            for job_id in conn.execute(
                select(jobs.c.id).where(jobs.c.state == JobState.RUNNING.value)
                .order_by(jobs.c.id)  # the order recover() takes rows in: no deadlock
            ).scalars()
        ]
        for job in running:
            if job.request == "abort":
                continue  # it is ending anyway
            service.store.transition(conn, job, JobState.PAUSING, paused_by="pipeline")
            service.store.record(conn, job.id, EventKind.PAUSING, actor=actor, by="pipeline")
        paused_ids = [j.id for j in running if j.request != "abort"]
        snapshot = {"jobs": paused_ids, "workers": {j.worker_id: j.id for j in running}}
        conn.execute(update(pipeline).where(pipeline.c.id == 1).values(
            state="paused", version=row.version + 1, actor=actor, paused_at=now(),
            snapshot=snapshot))  # fmt: skip
    service.signals.poke_all()
    states: dict[str, str] = {}

    def all_paused() -> bool:
        states.update(_states(service, paused_ids))
        return all(s != JobState.PAUSING.value for s in states.values())

    if not service.bus.wait_until(paused_ids, all_paused, timeout,
                                  service.settings.poll_interval):  # fmt: skip
        stuck = sorted(j for j, s in states.items() if s == JobState.PAUSING.value)
        _roll_back(service, actor, stuck)
        raise PipelinePauseFailed(
            f"Job(s) {', '.join(stuck)} did not reach a control point within {timeout} s "
            "(a long node without steps); the pipeline was not paused",
            jobs=stuck,
        )
    with service.db.begin() as conn:  # said once every job it stopped is paused
        service.store.record(conn, None, EventKind.PIPELINE_PAUSED, actor=actor, **snapshot)
    return status(service)


def _states(service: Jobs, ids: list[str]) -> dict[str, str]:
    if not ids:
        return {}
    with service.db.read() as conn:
        rows = conn.execute(select(jobs.c.id, jobs.c.state).where(jobs.c.id.in_(ids))).all()
    return {r.id: r.state for r in rows}


def _roll_back(service: Jobs, actor: str | None, stuck: list[str]) -> None:
    """Undo a pipeline pause that could not complete: stuck jobs keep running, the ones
    that did pause are resumed, the pipeline runs again."""
    with service.db.begin() as conn:
        for job_id in stuck:
            job = service.store.lock(conn, job_id)
            if job.state == JobState.PAUSING:
                service.store.transition(conn, job, JobState.RUNNING, paused_by=None)
                service.store.record(conn, job_id, EventKind.PAUSE_CANCELLED, actor=actor,
                                     by="pipeline")  # fmt: skip
        conn.execute(update(pipeline).where(pipeline.c.id == 1)
                     .values(state="running", snapshot={}, paused_at=None))  # fmt: skip
        service.store.record(conn, None, EventKind.PIPELINE_PAUSE_ROLLED_BACK, actor=actor,
                             stuck=stuck)  # fmt: skip
    service.signals.poke_all()
    _resume_paused_by_pipeline(service, actor)
    service.signals.pipeline_resumed()


def resume_pipeline(service: Jobs, *, actor: str | None = None) -> dict[str, Any]:
    """Let workers take jobs again and continue every job the pipeline pause stopped."""
    with service.db.begin() as conn:
        row = conn.execute(select(pipeline).where(pipeline.c.id == 1)).one()
        if row.state != "paused":
            raise PipelineConflict("The pipeline is not paused", state=row.state)
        conn.execute(update(pipeline).where(pipeline.c.id == 1).values(
            state="running", version=row.version + 1, actor=actor, paused_at=None,
            snapshot={}))  # fmt: skip
    resumed = _resume_paused_by_pipeline(service, actor)
    with service.db.begin() as conn:  # said once the jobs it stopped are queued again
        service.store.record(conn, None, EventKind.PIPELINE_RESUMED, actor=actor, jobs=resumed)
    service.signals.pipeline_resumed()
    return status(service)


def _resume_paused_by_pipeline(service: Jobs, actor: str | None) -> list[str]:
    # Back to the front, in their original order, ahead of jobs queued meanwhile.
    paused = [j for j in service.list(states=[JobState.PAUSED]) if j.paused_by == "pipeline"]
    for job in reversed(paused):
        service.resume(job.id, actor=actor, front=True)
    return [j.id for j in paused]
