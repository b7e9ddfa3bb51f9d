"""Workers: one per device, each a thread with its own event loop that claims queued jobs
and runs them. A pool starts them, keeps their heartbeats, and on start recovers the jobs
of workers that died (a killed process) so they resume from their last checkpoint."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import threading
from collections.abc import Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import insert, select, update

from midrun.core.events import EventKind
from midrun.core.ids import new_id
from midrun.jobs.execution import Execution
from midrun.jobs.records import Job
from midrun.jobs.states import JobState
from midrun.store.schema import jobs, now, pipeline, workers

if TYPE_CHECKING:
    from midrun.jobs.service import Jobs

log = logging.getLogger(__name__)
HOST = socket.gethostname()


class Worker:
    """Claims and runs jobs one at a time on one device, on its own backend."""

    def __init__(self, service: Jobs, device: str = "cpu", worker_id: str | None = None) -> None:
        self.service = service
        self.device = device
        self.backend = service.backends(device)  # its own runtime and registry: jobs run there
        self.id = worker_id or f"{HOST}-{os.getpid()}-{device}-{new_id()[:8]}"
        self.current: str | None = None
        self.held = False  # the pipeline was paused at the last claim attempt
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        with self.service.db.begin() as conn:
            conn.execute(insert(workers), {"id": self.id, "host": HOST, "pid": os.getpid(),
                                           "device": self.device, "started_at": now(),
                                           "heartbeat_at": now()})  # fmt: skip
        self._thread = threading.Thread(target=self._main, name=f"midrun-{self.id}", daemon=True)
        self._thread.start()

    def stop(self, timeout: float | None = 30.0) -> None:
        """Stop taking jobs; a job in progress is paused so that nothing is lost."""
        self._stop.set()
        if self.current is not None:
            from midrun.jobs.states import JobConflict

            with contextlib.suppress(JobConflict):
                self.service.pause(self.current, actor="worker shutdown", by="shutdown")
        self.service.signals.pipeline_resumed()  # wakes idle and held workers alike
        if self._thread is not None:
            self._thread.join(timeout)
        with self.service.db.begin() as conn:
            conn.execute(update(workers).where(workers.c.id == self.id)
                         .values(stopped_at=now(), job_id=None))  # fmt: skip

    def _main(self) -> None:
        asyncio.run(self._loop())

    async def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                worked = await self.run_once()
            except Exception:
                log.exception("worker %s failed outside a job", self.id)
                worked = False
            if not worked and self.held:
                await asyncio.to_thread(self.service.signals.wait_for_pipeline, 0.5)
            elif not worked:
                await asyncio.to_thread(self.service.signals.wait_for_work, 0.2)

    async def run_once(self) -> bool:
        """Claim one job and run it to its end or pause; False if none was waiting."""
        job = self.claim()
        if job is None:
            return False
        self.current = job.id
        failed = False
        try:
            await Execution(self.service, job, self.id, self.backend).run()
        except Exception:
            # Its end could not be recorded (the database refused a transaction...): the
            # job is let go of below and recovery takes it again (as a crash: a job
            # whose end can never be recorded fails after JobSettings.max_crashes).
            log.exception("worker %s: job %s ended without its end recorded", self.id, job.id)
            failed = True
        finally:
            self.current = None
            with self.service.db.begin() as conn:
                conn.execute(update(workers).where(workers.c.id == self.id).values(job_id=None))
        if failed:
            recover(self.service)
        return True

    def claim(self) -> Job | None:
        service = self.service
        # A lock-free look first: idle workers polling must not queue up for the write
        # lock that submissions need.
        with service.db.read() as conn:
            paused = conn.execute(select(pipeline.c.state)).scalar() != "running"
            waiting = conn.execute(
                select(jobs.c.id).where(jobs.c.state == JobState.QUEUED.value).limit(1)
            ).first()
        self.held = paused
        if paused or waiting is None:
            return None
        with service.db.begin() as conn:
            query = select(pipeline.c.state).where(pipeline.c.id == 1)
            if service.db.dialect == "postgresql":
                query = query.with_for_update(read=True)  # a pipeline pause waits for us
            if conn.execute(query).scalar() != "running":
                return None
            job = service.store.claim(conn, self.id)
            if job is None:
                return None
            conn.execute(update(workers).where(workers.c.id == self.id).values(job_id=job.id))
            service.store.record(conn, job.id, EventKind.RUNNING, worker_id=self.id,
                                 step=job.checkpoint_step,
                                 continued=job.checkpoint_step is not None)  # fmt: skip
        return job


class WorkerPool:
    """The workers of one process, their heartbeats, and crash recovery."""

    def __init__(self, service: Jobs, devices: Sequence[str] = ("cpu",)) -> None:
        self.service = service
        self.workers = [Worker(service, d) for d in devices]
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None

    def start(self) -> WorkerPool:
        recover(self.service)
        for job in self.service.list(states=[JobState.PAUSED]):
            if job.paused_by == "shutdown":  # paused by a clean stop: carry on
                self.service.resume(job.id, actor="worker start")
        for worker in self.workers:
            worker.start()
        self._beat = threading.Thread(target=self._heartbeat, name="midrun-heartbeat",
                                      daemon=True)  # fmt: skip
        self._beat.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        for worker in self.workers:
            worker.stop()
        if self._beat is not None:
            self._beat.join(5)

    def __enter__(self) -> WorkerPool:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _heartbeat(self) -> None:
        ids = [w.id for w in self.workers]
        while not self._stop.wait(self.service.settings.heartbeat_seconds):
            try:
                with self.service.db.begin() as conn:
                    conn.execute(update(workers).where(workers.c.id.in_(ids))
                                 .values(heartbeat_at=now()))  # fmt: skip
                recover(self.service)
            except Exception:
                log.exception("heartbeat failed")


def _alive(row: object) -> bool:
    """A worker is alive if it has not stopped and its heartbeat is recent, and, on this
    host, its process still exists."""
    if getattr(row, "stopped_at", None) is not None:
        return False
    if getattr(row, "host", None) == HOST:
        try:
            os.kill(int(getattr(row, "pid", 0)), 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass
    return True


def _ours(row: object) -> bool:
    return (getattr(row, "stopped_at", None) is None and getattr(row, "host", None) == HOST
            and getattr(row, "pid", None) == os.getpid())  # fmt: skip


def recover(service: Jobs) -> list[str]:
    """Requeue the jobs of dead workers (and any a live worker let go of). A job that was
    running resumes from its last checkpoint (or from its start); one that was pausing
    ends paused if it has a checkpoint to resume from; one with an abort pending ends
    aborted; one whose workers died ``JobSettings.max_crashes`` times while running it
    fails (``worker_crashed``). Returns the recovered job ids.

    A look without the write lock comes first (this runs with every heartbeat); which
    stale jobs have a checkpoint is asked of the artifact store outside any transaction."""
    with service.db.read() as conn:
        live, dead = _live_workers(service, conn)
        stale = service.store.stale_running(conn, live)
    if not stale and not dead:
        return []
    checkpoints = {job.id: service.artifacts.has_run_state(job.id) for job in stale}
    recovered: list[str] = []
    with service.db.begin() as conn:
        live, dead = _live_workers(service, conn)
        for job in service.store.stale_running(conn, live):
            has_checkpoint = checkpoints.get(job.id)
            if has_checkpoint is None:
                continue  # went stale since the look: the next heartbeat's look takes it
            crashes = job.crashes + 1
            values: dict[str, Any] = {}
            if job.request == "abort":
                target = JobState.ABORTED
            elif crashes >= service.settings.max_crashes:
                target = JobState.FAILED
                values["error"] = {
                    "type": "worker_crashed",
                    "message": f"Its worker died {crashes} times while running it (the last "
                               f"was {job.worker_id}); it is not run again, as it may be what "
                               "kills its worker",
                    "details": "", "extra_info": {"crashes": crashes},
                }  # fmt: skip
            elif job.state == JobState.PAUSING and has_checkpoint:
                target = JobState.PAUSED
            else:
                target = JobState.QUEUED
            job = service.store.transition(conn, job, target, worker_id=None, request=None,
                                           progress={}, crashes=crashes, **values)  # fmt: skip
            service.store.record(conn, job.id, EventKind.RECOVERED, to=target.value,
                                 step=job.checkpoint_step, crashes=crashes,
                                 from_checkpoint=has_checkpoint)  # fmt: skip
            if target == JobState.FAILED:
                service.store.record(conn, job.id, EventKind.FAILED, step=job.checkpoint_step,
                                     error=values["error"])  # fmt: skip
            service.count_batch(conn, job)
            recovered.append(job.id)
        if dead:
            conn.execute(update(workers).where(workers.c.id.in_(dead))
                         .values(stopped_at=now(), job_id=None))  # fmt: skip
    if recovered:
        service.signals.wake_workers()
    return recovered


def _live_workers(service: Jobs, conn: Any) -> tuple[set[str], list[str]]:
    """The ids of live workers, and of dead ones not yet marked stopped. This process's
    own running workers are alive whatever their heartbeat says (a starved heartbeat
    thread must not get a job run twice); others need both a live process and a recent
    heartbeat."""
    timeout = timedelta(seconds=service.settings.worker_timeout)
    rows = conn.execute(select(workers)).all()
    live = {
        r.id for r in rows
        if _ours(r) or (_alive(r) and now() - r.heartbeat_at < timeout)
    }  # fmt: skip
    return live, [r.id for r in rows if r.id not in live and r.stopped_at is None]
