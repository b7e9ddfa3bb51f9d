"""Jobs end to end on one worker: run, pause, resume, edit, undo, abort; every refusal."""

from __future__ import annotations

import threading
import time

import pytest

from midrun.core.errors import InputNotHotSwappable
from midrun.debug.trace import Tracer
from midrun.engine.edits import EditError
from midrun.engine.executor import Executor, RunStatus, WorkflowInvalidError
from midrun.jobs.states import JobConflict, JobNotFound, JobState
from tests.jobs.conftest import result, ticker


def wait_step(service, job_id: str, step: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        signal = service.signals.get(job_id)
        if signal is not None and (signal.step or 0) >= step:
            return
        assert time.monotonic() < deadline, f"job {job_id} never reached step {step}"
        time.sleep(0.002)


def test_a_job_runs_to_completion_with_its_outputs(service, pool) -> None:
    job = service.wait(service.submit(ticker(steps=5, delay=0)).id)
    assert job.state == JobState.COMPLETED
    assert result(job) == (15, [1, 1, 1, 1, 1])
    kinds = [e["kind"] for e in service.events(job.id)]
    assert kinds == ["queued", "running", "completed"]
    assert job.started_at and job.finished_at and job.active_seconds > 0


def test_invalid_workflows_are_refused_at_submit_with_node_errors(service) -> None:
    bad = ticker()
    bad["2"]["inputs"]["gain"] = 1000
    with pytest.raises(WorkflowInvalidError) as refused:
        service.submit(bad)
    assert "2" in refused.value.extra_info["node_errors"]
    with pytest.raises(WorkflowInvalidError):
        service.submit({"1": {"class_type": "NoSuchNode", "inputs": {}}})
    assert service.list() == []


def test_pause_checkpoints_frees_the_worker_and_resume_is_identical(service, pool) -> None:
    straight = service.wait(service.submit(ticker(steps=30, gain=3)).id)
    job = service.submit(ticker(steps=30, gain=3))
    other = service.submit(ticker(steps=3, delay=0, label="other"))
    wait_step(service, job.id, 5)
    assert service.pause(job.id).state == JobState.PAUSING
    paused = service.wait(job.id, [JobState.PAUSED])
    assert paused.checkpoint_step is not None and 5 <= paused.checkpoint_step < 30
    assert service.debug_state(job.id)["paused_at_step"] == paused.checkpoint_step
    # The worker slot went to the next job while this one is paused.
    assert service.wait(other.id).state == JobState.COMPLETED
    assert service.get(job.id).state == JobState.PAUSED
    service.resume(job.id)
    done = service.wait(job.id)
    assert done.state == JobState.COMPLETED
    assert result(done) == result(straight)
    kinds = [e["kind"] for e in service.events(job.id)]
    assert kinds == ["queued", "running", "pausing", "paused", "resumed", "running",
                     "completed"]  # fmt: skip
    running = [e["data"]["continued"] for e in service.events(job.id) if e["kind"] == "running"]
    assert running == [False, True]


def test_paused_time_is_not_active_time(service, pool) -> None:
    job = service.submit(ticker(steps=40, delay=0.01))
    wait_step(service, job.id, 3)
    service.pause(job.id)
    service.wait(job.id, [JobState.PAUSED])
    time.sleep(1.0)
    service.resume(job.id)
    done = service.wait(job.id)
    wall = (done.finished_at - done.started_at).total_seconds()
    assert wall > 1.0
    assert done.active_seconds < wall - 0.9


def test_a_queued_job_is_held_and_released(service) -> None:
    job = service.submit(ticker(steps=2, delay=0))
    assert service.pause(job.id).state == JobState.PAUSED
    assert service.resume(job.id).state == JobState.QUEUED


@pytest.mark.parametrize(
    ("action", "state"),
    [("resume", JobState.QUEUED), ("pause", JobState.PAUSED), ("resume", JobState.COMPLETED),
     ("abort", JobState.COMPLETED), ("pause", JobState.ABORTED), ("edit", JobState.FAILED)],
)  # fmt: skip
def test_actions_the_state_does_not_allow_conflict_with_the_state(service, action, state) -> None:
    job = service.submit(ticker(steps=2, delay=0))
    if state == JobState.PAUSED:
        service.pause(job.id)
    elif state.terminal:
        with service.db.begin() as conn:  # put it there directly, as a worker would
            row = service.store.lock(conn, job.id)
            row = service.store.transition(conn, row, JobState.RUNNING, worker_id="w")
            if state == JobState.ABORTED:
                service.store.transition(conn, row, JobState.ABORTED)
            else:
                service.store.transition(conn, row, state)
    calls = {
        "resume": lambda: service.resume(job.id),
        "pause": lambda: service.pause(job.id),
        "abort": lambda: service.abort(job.id),
        "edit": lambda: service.edit(job.id, "2", "gain", 2),
    }
    with pytest.raises(JobConflict) as conflict:
        calls[action]()
    assert conflict.value.extra_info["state"] == state.value
    assert service.get(job.id).state == state


def test_terminal_states_are_not_left(service) -> None:
    job = service.submit(ticker())
    service.abort(job.id, "changed my mind")
    with service.db.begin() as conn, pytest.raises(JobConflict):
        service.store.transition(conn, service.store.lock(conn, job.id), JobState.QUEUED)
    assert service.get(job.id).state == JobState.ABORTED


def test_unknown_jobs_are_named(service) -> None:
    with pytest.raises(JobNotFound, match="nope"):
        service.pause("nope")


def hold_at_step(service, job_id: str, step: int) -> tuple[threading.Event, threading.Event]:
    """(reached, release): the job's worker stops in its hook's progress report for
    ``step`` (bus listeners run on the emitter's thread), before the hook reads the row's
    requests at that point, and waits there until ``release`` is set."""
    reached, release = threading.Event(), threading.Event()

    def listener(event: dict) -> None:
        if (event.get("job_id"), event["type"], event.get("step")) == (
            job_id, "midrun.progress", step
        ):
            reached.set()
            release.wait(30)

    service.bus.subscribe(listener)
    return reached, release


async def test_abort_of_a_running_job_keeps_partial_results(service, pool) -> None:
    job = service.submit(ticker(steps=12, delay=0, gain=3, start=7))
    reached, release = hold_at_step(service, job.id, 4)
    assert reached.wait(30), "the job never reached step 4"
    try:
        assert service.abort(job.id, "looks wrong").request == "abort"
        with pytest.raises(JobConflict, match="abort is pending"):
            service.pause(job.id)
    finally:
        release.set()
    aborted = service.wait(job.id)
    # The abort was pending when the worker read the row at step 4: it ended there.
    assert aborted.state == JobState.ABORTED
    assert aborted.checkpoint_step == 4
    debug = service.debug_state(job.id)
    assert debug["abort_reason"] == "looks wrong" and debug["paused_at_step"] == 4
    assert [e["step"] for e in service.events(job.id) if e["kind"] == "aborted"] == [4]
    # The partial results decode: continued in process, the saved run picks up at step 5
    # with the ticker's state after step 4 and ends where an uninterrupted run does.
    partial = service.artifacts.load_run_state(job.id)
    tracer = Tracer()
    finished = await Executor(hooks=[tracer]).resume(partial, service.registry)
    assert finished.status == RunStatus.COMPLETED
    steps = [p.step for p in tracer.points if p.node_id == "2" and p.position == "step"]
    assert steps == list(range(5, 13))
    assert finished.plan.ui["3"]["value"] == [7 + 3 * sum(range(1, 13))]
    assert finished.plan.ui["4"]["value"] == [[3] * 12]


@pytest.mark.parametrize("action", ["pause", "abort"])
def test_a_request_is_announced_before_the_worker_acts_on_it(
    service, pool, monkeypatch, action: str
) -> None:
    """Listeners hear "pausing" / "aborting" before the worker's "paused" / "aborted",
    even when the worker acts at once: here the request's own thread is held in its poke
    until the worker is done (a page hearing them the other way round showed a job as
    "aborting" for ever)."""
    job = service.submit(ticker(steps=500, delay=0.005))
    wait_step(service, job.id, 2)
    heard: list[str] = []
    service.bus.subscribe(lambda e: heard.append(e["type"]) if e.get("job_id") == job.id else None)
    ended = JobState.PAUSED if action == "pause" else JobState.ABORTED
    poke = service.signals.poke

    def held_poke(job_id: str) -> None:
        poke(job_id)
        service.wait(job_id, [ended], timeout=10)

    monkeypatch.setattr(service.signals, "poke", held_poke)
    getattr(service, action)(job.id)
    request, done = ("midrun.pausing", "midrun.paused") if action == "pause" else (
        "midrun.aborting", "midrun.aborted")  # fmt: skip
    assert [t for t in heard if t in (request, done)] == [request, done]


def test_a_resume_is_announced_before_the_worker_starts_again(service, pool, monkeypatch) -> None:
    """As above for "resumed": here the resuming thread is held just after its commit
    until a worker has started the job again."""
    import contextlib
    import threading

    job = service.submit(ticker(steps=60, delay=0.005))
    wait_step(service, job.id, 2)
    service.pause(job.id)
    service.wait(job.id, [JobState.PAUSED])
    heard: list[str] = []
    running = threading.Event()

    def listen(event: dict) -> None:
        if event.get("job_id") == job.id:
            heard.append(event["type"])
            if event["type"] == "midrun.running":
                running.set()

    service.bus.subscribe(listen)
    begin, me = service.db.begin, threading.get_ident()

    @contextlib.contextmanager
    def held_begin():
        with begin() as conn:
            yield conn
        if threading.get_ident() == me:  # the resume's own transaction, now committed
            running.wait(10)

    monkeypatch.setattr(service.db, "begin", held_begin)
    service.resume(job.id)
    assert "midrun.running" in heard
    assert heard.index("midrun.resumed") < heard.index("midrun.running"), heard
    assert service.wait(job.id).state == JobState.COMPLETED


def test_abort_of_queued_and_paused_jobs_is_immediate(service, pool) -> None:
    from midrun.jobs import pipeline

    pipeline.pause_pipeline(service)  # no worker claims it while the test holds it
    queued = service.submit(ticker(), priority=-1)
    service.pause(queued.id)
    assert service.abort(queued.id, "not needed").state == JobState.ABORTED
    pipeline.resume_pipeline(service)
    running = service.submit(ticker(steps=100))
    wait_step(service, running.id, 2)
    service.pause(running.id)
    service.wait(running.id, [JobState.PAUSED])
    aborted = service.abort(running.id, "enough")
    assert aborted.state == JobState.ABORTED
    assert service.artifacts.load_run_state(running.id) is not None  # partial kept
    failures = service.failures(reason="enough")
    assert [f["id"] for f in failures] == [running.id]
    assert failures[0]["reason"] == "enough"


def pause_at(service, job_id: str, step: int) -> int:
    wait_step(service, job_id, step)
    service.pause(job_id)
    return service.wait(job_id, [JobState.PAUSED]).checkpoint_step


def test_edits_on_a_paused_job_apply_from_the_next_step(service, pool) -> None:
    job = service.submit(ticker(steps=30, gain=1))
    at = pause_at(service, job.id, 5)
    answer = service.edit(job.id, "2", "gain", 5, actor="ana")
    assert [e["status"] for e in answer["edits"]] == ["pending"]
    modified = service.debug_state(job.id)["modified_params_json"]
    assert modified["2.gain"]["old"] == 1 and modified["2.gain"]["new"] == 5
    assert modified["2.gain"]["modified_mid_run"] is True
    service.resume(job.id)
    _total, trace = result(service.wait(job.id))
    assert trace == [1] * at + [5] * (30 - at)
    edits = service.store.edits(job.id)
    assert edits[0]["status"] == "applied" and edits[0]["applied_step"] == at
    events = [e for e in service.events(job.id) if e["kind"] == "edited"]
    assert events[0]["actor"] == "ana" and events[0]["old"] == 1 and events[0]["new"] == 5
    assert events[0]["step"] == at


def test_undo_restores_the_original_values(service, pool) -> None:
    straight = service.wait(service.submit(ticker(steps=20, gain=2)).id)
    job = service.submit(ticker(steps=20, gain=2))
    pause_at(service, job.id, 3)
    first = service.edit(job.id, "2", "gain", 7)["edit_id"]
    service.edit(job.id, "2", "steps", 25)
    service.edit(job.id, "4", "label", "renamed")
    assert [e["id"] for e in service.undo(job.id, first)] == [first]
    with pytest.raises(JobConflict, match="undone"):
        service.undo(job.id, first)
    assert len(service.undo(job.id)) == 2  # all the rest
    assert service.debug_state(job.id)["modified_params_json"] == {}
    service.resume(job.id)
    assert result(service.wait(job.id)) == result(straight)


def test_a_pending_node_takes_any_edit_and_a_finished_cold_path_is_refused(
    service, pool
) -> None:
    job = service.submit(ticker(steps=30))
    pause_at(service, job.id, 3)
    service.edit(job.id, "3", "label", "renamed")  # not run yet
    with pytest.raises(InputNotHotSwappable, match="'start'"):
        service.edit(job.id, "1", "value", 9)  # reaches the running Ticker's cold input
    with pytest.raises(EditError, match="gain"):
        service.edit(job.id, "2", "gain", 1000)  # out of range
    with pytest.raises(EditError, match="no input"):
        service.edit(job.id, "2", "nonsense", 1)
    with pytest.raises(EditError, match="not in"):
        service.edit(job.id, "99", "value", 1)
    with pytest.raises(EditError, match="connected"):
        service.edit(job.id, "2", "start", 1)
    service.resume(job.id)
    done = service.wait(job.id)
    assert done.outputs["3"]["label"] == ["renamed"]


def test_hot_edits_on_a_running_job_apply_at_the_next_control_point(service, pool) -> None:
    job = service.submit(ticker(steps=60, delay=0.01, gain=1))
    wait_step(service, job.id, 5)
    service.edit(job.id, "2", "gain", 4)
    done = service.wait(job.id)
    trace = result(done)[1]
    switch = trace.index(4)
    assert 5 <= switch < 60 and trace == [1] * switch + [4] * (60 - switch)
    edit = service.store.edits(job.id)[0]
    assert edit["status"] == "applied" and edit["applied_step"] == switch
    assert done.request is None


def test_cold_edits_on_a_running_job_say_pause_first(service, pool) -> None:
    job = service.submit(ticker(steps=200, delay=0.01))
    wait_step(service, job.id, 2)
    with pytest.raises(JobConflict, match="pause first"):
        service.edit(job.id, "1", "value", 5)
    service.abort(job.id)
    service.wait(job.id)


def test_resumed_jobs_can_go_to_the_front_of_the_queue(service, pool) -> None:
    job = service.submit(ticker(steps=100))
    pause_at(service, job.id, 2)
    blocker = service.submit(ticker(steps=100, label="blocker"))
    wait_step(service, blocker.id, 1)
    waiting = service.submit(ticker(steps=1, delay=0, label="waiting"))
    service.resume(job.id, front=True)
    assert [j.id for j in service.list(states=[JobState.QUEUED])] == [job.id, waiting.id]
    service.abort(blocker.id)
    for j in (job, waiting):
        service.wait(j.id)


def test_a_job_holds_a_bounded_number_of_pending_edits(service) -> None:
    from midrun.jobs.service import MAX_PENDING_EDITS

    job = service.submit(ticker(steps=2, delay=0))
    service.pause(job.id)
    for gain in range(MAX_PENDING_EDITS):
        service.edit(job.id, "2", "gain", gain % 7 + 1)
    with pytest.raises(JobConflict, match="pending edits, the most a job holds") as refused:
        service.edit(job.id, "2", "gain", 3)
    assert refused.value.state == JobState.PAUSED
    service.undo(job.id)
    service.edit(job.id, "2", "gain", 3)  # room again once some are withdrawn
