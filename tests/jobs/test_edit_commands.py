"""Edit commands of the jobs layer (what the server's routes and the CLI's embedded client
call): an edit list is all or nothing where it can be, undo names unknown edits, and a
paused job's edit is checked on its checkpoint outside any write transaction, checked
again when the job changed meanwhile."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from typing import Any

import pytest

from midrun.debug.trace import StopAt
from midrun.engine.control import Position
from midrun.engine.edits import (
    EditError,
    apply_edits,
    changed_inputs,
    check_edit,
    cold_inputs,
)
from midrun.engine.executor import Executor, RunStatus
from midrun.engine.workflow_plan import RunContext
from midrun.graph.workflow import Workflow
from midrun.jobs import pipeline
from midrun.jobs.edits import EditNotFound, edits_view, make_edits, undo_edits
from midrun.jobs.states import JobConflict, JobState
from midrun.store.schema import jobs
from tests.jobs.conftest import ticker


def held(service, workflow: dict[str, Any]) -> str:
    """A job that no worker takes: queued, then held (``paused``, no checkpoint)."""
    job = service.submit(workflow)
    return service.pause(job.id).id


def with_checkpoint(service, tmp_path, step: int = 3) -> str:
    """A held job whose checkpoint is a real run of its workflow stopped at ``step``."""
    workflow = ticker(steps=10, delay=0)
    job_id = held(service, workflow)
    stop = StopAt("2", Position.STEP, step)
    run = asyncio.run(Executor(hooks=[stop]).run(Workflow.from_api(workflow), service.registry,
                                                 context=RunContext(output_dir=tmp_path)))
    assert run.status == RunStatus.SUSPENDED
    service.artifacts.save_run_state(job_id, run.state)
    with service.db.begin() as conn:  # as the job's hook records a checkpoint
        conn.execute(jobs.update().where(jobs.c.id == job_id).values(checkpoint_step=step))
    return job_id


def test_an_edit_list_is_withdrawn_when_one_of_it_is_refused(service) -> None:
    job_id = held(service, ticker())
    with pytest.raises(EditError) as refused:
        make_edits(service, job_id, [("2", "gain", 3), ("3", "label", "x"),
                                     ("2", "gain", 1000)], "ana")  # fmt: skip
    made = refused.value.extra_info["withdrawn_edits"]
    assert len(made) == 2 and refused.value.extra_info["kept_edits"] == []
    view = edits_view(service, job_id)
    assert view["pending"] == [] and [e["status"] for e in view["edits"]] == ["undone"] * 2
    assert view["modified_params"] == {}


def test_an_edit_list_answers_with_the_edits_it_made(service) -> None:
    job_id = held(service, ticker())
    answer = make_edits(service, job_id, [("2", "gain", 3), ("3", "label", "x")], "ana")
    assert answer["state"] == "paused" and len(answer["edit_ids"]) == 2
    assert [e["id"] for e in answer["pending"]] == answer["edit_ids"]
    assert answer["modified_params"]["2.gain"]["new"] == 3


def test_undo_names_an_edit_the_job_never_had(service) -> None:
    job_id = held(service, ticker())
    edit_id = make_edits(service, job_id, [("2", "gain", 3)], "ana")["edit_ids"][0]
    with pytest.raises(EditNotFound, match=f"no edit {edit_id + 1}") as missing:
        undo_edits(service, job_id, edit_id + 1, "ana")
    assert missing.value.type == "edit_not_found"
    answer = undo_edits(service, job_id, edit_id, "ana")
    assert [e["id"] for e in answer["undone"]] == [edit_id] and answer["pending"] == []
    with pytest.raises(JobConflict, match="undone"):
        undo_edits(service, job_id, edit_id, "ana")


@contextlib.contextmanager
def counted_writes(service, monkeypatch) -> Iterator[list[int]]:
    """``[open write transactions]``, kept current while the test runs."""
    open_writes = [0]
    begin = service.db.begin

    @contextlib.contextmanager
    def counting() -> Iterator[Any]:
        with begin() as conn:
            open_writes[0] += 1
            try:
                yield conn
            finally:
                open_writes[0] -= 1

    monkeypatch.setattr(service.db, "begin", counting)
    yield open_writes


def test_a_paused_jobs_edit_is_checked_on_its_checkpoint_outside_write_transactions(
    service, tmp_path, monkeypatch
) -> None:
    job_id = with_checkpoint(service, tmp_path)
    service.edit(job_id, "2", "gain", 4)  # a pending edit, replayed on the next check
    load = service.artifacts.load_run_state
    writes_while_loading: list[int] = []

    def watched(key: str) -> Any:
        writes_while_loading.append(open_writes[0])
        return load(key)

    with counted_writes(service, monkeypatch) as open_writes:
        monkeypatch.setattr(service.artifacts, "load_run_state", watched)
        answer = service.edit(job_id, "2", "steps", 12)
    assert writes_while_loading == [0]
    assert answer["edits"][-1]["step"] == 3 and answer["edits"][-1]["old"] == 10
    with pytest.raises(EditError, match="start"):
        service.edit(job_id, "2", "start", 1)  # connected: refused on the checkpoint too


def test_an_edit_is_checked_again_when_the_job_changed_while_it_was_checked(
    service, tmp_path, monkeypatch
) -> None:
    job_id = with_checkpoint(service, tmp_path)
    check = service._check_edit
    calls: list[str] = []

    def racing(job, pending, node_id, input_name, value) -> Any:
        calls.append(node_id)
        if len(calls) == 1:  # another caller edits the same input meanwhile
            service.edit(job_id, "2", "gain", 7)
        return check(job, pending, node_id, input_name, value)

    monkeypatch.setattr(service, "_check_edit", racing)
    answer = service.edit(job_id, "2", "gain", 9)
    assert calls == ["2", "2", "2"]  # ours, the other's, ours again on what it is now
    gains = [(e["old"], e["new"]) for e in answer["edits"]]
    assert gains == [(1, 7), (7, 9)]  # the old value is the one the other edit left


def test_an_edit_that_keeps_meeting_changes_is_a_conflict(service, monkeypatch) -> None:
    job_id = held(service, ticker())
    check = service._check_edit

    def always_racing(job, pending, node_id, input_name, value) -> Any:
        checked = check(job, pending, node_id, input_name, value)
        with service.db.begin() as conn:  # the row moves on before every insert
            service.store.transition(conn, service.store.lock(conn, job_id), None)
        return checked

    monkeypatch.setattr(service, "_check_edit", always_racing)
    with pytest.raises(JobConflict, match="kept changing"):
        service.edit(job_id, "2", "gain", 9)
    assert service.store.edits(job_id) == []


def test_a_running_jobs_cold_edit_says_pause_first_without_a_worker(service) -> None:
    pipeline.pause_pipeline(service)
    job = service.submit(ticker())
    with service.db.begin() as conn:  # as a worker that claimed it and reached the ticker
        running = service.store.transition(conn, service.store.lock(conn, job.id),
                                           JobState.RUNNING, progress={"node": "2"})  # fmt: skip
    assert running.state == JobState.RUNNING
    with pytest.raises(JobConflict, match="'start' cannot change between steps; pause first"):
        service.edit(job.id, "1", "value", 5)
    assert service.edit(job.id, "2", "gain", 5)["state"] == "running"  # hot
    assert service.get(job.id).request == "edit"


def test_which_inputs_of_a_node_in_flight_an_edit_reaches() -> None:
    workflow = Workflow.from_api(ticker())
    assert changed_inputs(workflow, "2", "2", "gain") == {"gain"}
    assert changed_inputs(workflow, "2", "1", "value") == {"start"}
    assert changed_inputs(workflow, "2", "3", "label") == set()  # downstream
    from tests import testnodes

    ticker_type = testnodes.registry()["Ticker"]
    assert cold_inputs(ticker_type, {"gain", "start", "steps"}) == ["start"]


def test_edits_apply_to_a_copy_and_are_checked_against_the_registry() -> None:
    from tests import testnodes

    workflow = ticker(gain=1)
    edited = apply_edits(workflow, [{"node_id": "2", "input_name": "gain", "new": 3},
                                    {"node_id": "2", "input_name": "gain", "new": 4}])  # fmt: skip
    assert edited["2"]["inputs"]["gain"] == 4 and workflow["2"]["inputs"]["gain"] == 1
    registry = testnodes.registry()
    assert check_edit(workflow, "2", "gain", 5, registry)["2"]["inputs"]["gain"] == 5
    assert workflow["2"]["inputs"]["gain"] == 1
    with pytest.raises(EditError, match="refused"):
        check_edit(workflow, "2", "gain", 1000, registry)
    with pytest.raises(EditError, match="no input 'nope'"):
        check_edit(workflow, "2", "nope", 1, registry)
