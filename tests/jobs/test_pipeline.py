"""The global pipeline pause: atomic, quick, and resumed with nothing lost."""

from __future__ import annotations

import threading

import pytest

from midrun.jobs import pipeline
from midrun.jobs.states import JobState
from midrun.jobs.worker import WorkerPool
from tests.jobs.conftest import result, ticker
from tests.jobs.test_control import wait_step


@pytest.fixture
def pool2(service):
    with WorkerPool(service, ["cpu", "cpu"]) as workers:
        yield workers


def watch_claims(pool, monkeypatch) -> tuple[threading.Event, dict[str, threading.Event]]:
    """(armed, looked): once ``armed`` is set, ``looked[worker id]`` is set when that
    worker has begun a claim attempt after it, found the pipeline paused and taken
    nothing (each worker tries on its own thread, at its own pace)."""
    armed = threading.Event()
    looked = {w.id: threading.Event() for w in pool.workers}
    for worker in pool.workers:

        def claim(worker=worker, claim=worker.claim):
            after_arming = armed.is_set()
            job = claim()
            if after_arming and job is None and worker.held:
                looked[worker.id].set()
            return job

        monkeypatch.setattr(worker, "claim", claim)
    return armed, looked


def test_pipeline_pause_pauses_every_running_job_and_holds_the_queue(
    service, pool2, monkeypatch
) -> None:
    straight = [service.wait(service.submit(ticker(steps=40, gain=g)).id) for g in (1, 2)]
    running = [service.submit(ticker(steps=40, gain=g)) for g in (1, 2)]
    pending = service.submit(ticker(steps=2, delay=0, label="pending"))
    for job in running:
        wait_step(service, job.id, 3)
    status = pipeline.pause_pipeline(service, actor="ops")
    assert status["state"] == "paused"
    assert sorted(status["paused_jobs"]) == sorted(j.id for j in running)
    assert set(status["workers_at_pause"].values()) == {j.id for j in running}
    assert status["pending"] == [pending.id]
    assert all(service.get(j.id).state == JobState.PAUSED for j in running)
    # Every worker looks at the queue again after "late" is in it, and takes nothing.
    armed, looked = watch_claims(pool2, monkeypatch)
    late = service.submit(ticker(steps=1, delay=0, label="late"))
    armed.set()
    for worker in pool2.workers:
        assert looked[worker.id].wait(30), f"{worker.id} never looked at the queue"
    assert service.get(late.id).state == JobState.QUEUED  # waits while paused
    assert service.get(pending.id).state == JobState.QUEUED
    with pytest.raises(pipeline.PipelineConflict):
        pipeline.pause_pipeline(service)
    resumed = pipeline.resume_pipeline(service, actor="ops")
    assert resumed["state"] == "running"
    for job, expected in zip(running, straight, strict=True):
        assert result(service.wait(job.id)) == result(expected)
    for job in (pending, late):
        assert service.wait(job.id).state == JobState.COMPLETED
    kinds = [e["kind"] for e in service.events() if e["job_id"] is None]
    assert kinds == ["pipeline_paused", "pipeline_resumed"]


def test_a_pipeline_pause_that_cannot_complete_pauses_nothing(service, pool2) -> None:
    stepping = service.submit(ticker(steps=400, delay=0.01))
    stuck = service.submit({
        "1": {"class_type": "Slow", "inputs": {"value": 1, "seconds": 1.5}},
        "2": {"class_type": "Output", "inputs": {"value": ["1", 0]}},
    })  # fmt: skip
    wait_step(service, stepping.id, 2)
    service.wait(stuck.id, [JobState.RUNNING], timeout=5)
    with pytest.raises(pipeline.PipelinePauseFailed) as failed:
        pipeline.pause_pipeline(service, timeout=0.3)
    assert failed.value.extra_info["jobs"] == [stuck.id]
    assert pipeline.status(service)["state"] == "running"
    # The one that did pause was resumed; both finish.
    assert service.wait(stuck.id).state == JobState.COMPLETED
    assert service.wait(stepping.id).state == JobState.COMPLETED


def test_resume_pipeline_when_running_conflicts(service) -> None:
    with pytest.raises(pipeline.PipelineConflict):
        pipeline.resume_pipeline(service)


def test_a_job_whose_pause_is_cancelled_while_it_stops_goes_on(service, monkeypatch) -> None:
    # A pipeline pause that rolls back moves a still-pausing job back to running. A job
    # whose run had already stopped for that pause must not be stranded "running" with
    # nobody running it: it goes back to the queue (front) and continues from its save.
    from midrun.jobs import execution

    straight = ticker(steps=8, delay=0)
    stopped, flipped = threading.Event(), threading.Event()
    release = execution.Execution._release

    def held_release(self, end):  # the run has stopped; its result is not recorded yet
        if end.status.value == "suspended" and not flipped.is_set():
            stopped.set()
            assert flipped.wait(30)
        return release(self, end)

    monkeypatch.setattr(execution.Execution, "_release", held_release)
    job = service.submit(ticker(steps=8, delay=0.01))
    with WorkerPool(service):
        wait_step(service, job.id, 2)
        service.pause(job.id)
        assert stopped.wait(30)
        with service.db.begin() as conn:  # what the pipeline's rollback does
            locked = service.store.lock(conn, job.id)
            assert locked.state == JobState.PAUSING
            service.store.transition(conn, locked, JobState.RUNNING, paused_by=None)
        flipped.set()
        done = service.wait(job.id, timeout=30)
    assert done.state == JobState.COMPLETED
    kinds = [e["kind"] for e in service.events(job.id)]
    assert kinds.count("running") == 2 and "paused" not in kinds
    assert kinds[kinds.index("pausing") + 1] == "resumed"
    reference = service.submit(straight)
    with WorkerPool(service):
        assert result(done) == result(service.wait(reference.id, timeout=30))
