"""The jobs layer's read views and saved-workflow batches, as the server answers them and
the command line prints them: where a job stands, its parameters with what was edited,
diffs of a job's versions and of two jobs, failures per owner, the history, and one home
for what a valid variation is."""

from __future__ import annotations

import pytest

from midrun.graph.variations import (
    CycleVariation,
    SeedVariation,
    SweepVariation,
    VariationError,
    parse_variation,
    variation_json,
)
from midrun.jobs import diffs, history, views, workflows
from midrun.jobs.edits import make_edits
from tests.jobs.conftest import ticker


def held(service, workflow=None, **fields) -> str:
    job = service.submit(workflow or ticker(), **fields)
    return service.pause(job.id).id


def test_job_state_shows_pending_edits_and_what_changed(service) -> None:
    job_id = held(service)
    make_edits(service, job_id, [("2", "gain", 3)], "ana")
    state = views.job_state(service, job_id)
    assert state["state"] == "paused" and state["paused_by"] == "user"
    assert [(e["node_id"], e["input_name"], e["new"]) for e in state["pending_edits"]] == [
        ("2", "gain", 3)]  # fmt: skip
    assert state["modified_params"]["2.gain"]["old"] == 1
    assert state["outputs"] == {} and state["error"] is None


def test_outputs_are_summarised_as_counts_of_lists() -> None:
    summary = views.outputs_summary({"9": {"images": [{}, {}], "text": "hi"}, "state": 3})
    assert summary == {"9": {"images": 2, "text": "hi"}, "state": 3}


def test_job_parameters_are_as_the_job_will_run_with_the_original_beside(service) -> None:
    job_id = held(service)
    edit_id = make_edits(service, job_id, [("2", "gain", 3)], "ana")["edit_ids"][0]
    params = {(p["node_id"], p["field"]): p for p in views.job_parameters(service, job_id)}
    gain = params[("2", "gain")]
    assert gain["value"] == 3 and gain["original"] == 1 and gain["edit_id"] == edit_id
    assert "original" not in params[("2", "steps")]


def test_a_diff_shows_a_job_as_submitted_against_as_it_will_run(service) -> None:
    job_id = held(service)
    make_edits(service, job_id, [("2", "gain", 3), ("3", "label", "renamed")], "ana")
    diff = diffs.job_diff(service, service.get(job_id), None)
    assert diff["from"] == {"job_id": job_id, "version": "original"}
    assert diff["changed"] == [
        {"node_id": "2", "input": "gain", "from": 1, "to": 3},
        {"node_id": "3", "input": "label", "from": "out", "to": "renamed"}]  # fmt: skip
    assert service.get(job_id).workflow["2"]["inputs"]["gain"] == 1  # the row is untouched


def test_a_diff_of_two_jobs_names_inputs_nodes_and_parameters(service) -> None:
    saved = workflows.save_workflow(service, "t", ticker())
    batch = workflows.submit_workflow_batch(service, saved, {"2.steps": 7}, count=2,
                                            variations=[{"type": "cycle", "node_id": "2",
                                                         "field": "gain", "values": [1, 4]}])
    left, right = (service.get(j["id"]) for j in batch["jobs"])
    diff = diffs.job_diff(service, left, right)
    assert diff["changed"] == [{"node_id": "2", "input": "gain", "from": 1, "to": 4}]
    assert diff["parameters"] == {"2.gain": {"from": 1, "to": 4}}
    assert left.workflow["2"]["inputs"]["steps"] == 7  # the batch's parameters applied
    assert diffs.workflow_diff({"1": {"inputs": {}}}, {"2": {"inputs": {}}}) == {
        "changed": [], "added_nodes": ["2"], "removed_nodes": ["1"]}  # fmt: skip


def test_failures_are_filtered_to_their_owner(service) -> None:
    mine = held(service, owner="ana")
    theirs = held(service, owner="bob")
    service.abort(mine, "mine")
    service.abort(theirs, "theirs")
    assert [f["id"] for f in views.failures_of(service, "ana")] == [mine]
    assert {f["id"] for f in views.failures_of(service, None)} == {mine, theirs}
    assert [f["id"] for f in views.failures_of(service, None, reason="THEIRS")] == [theirs]


def test_a_job_sees_its_own_and_its_workflows_breakpoints(service) -> None:
    from midrun.jobs import breakpoints as bps

    saved = workflows.save_workflow(service, "t", ticker())
    job = service.pause(workflows.execute_workflow(service, saved["id"]).id)
    on_workflow = bps.create(service, {"node_id": "2"}, workflow_id=saved["id"])
    on_job = bps.create(service, {"node_id": "3"}, job_id=job.id)
    assert [b["id"] for b in views.applying_breakpoints(service, job)] == [on_job["id"],
                                                                           on_workflow["id"]]


def test_the_history_lists_ended_jobs_and_hides_them_by_owner(service) -> None:
    first, second = held(service, owner="ana"), held(service, owner="bob")
    service.abort(first, "x")
    service.abort(second, "y")
    assert [j.id for j in history.ended_jobs(service)] == [first, second]
    history.hide(service, None, "ana")
    assert [j.id for j in history.ended_jobs(service)] == [second]
    history.hide(service, [second], None)
    assert history.ended_jobs(service) == []
    assert service.get(second).hidden_at is not None  # the row stays


@pytest.mark.parametrize(("data", "message"), [
    ({"type": "zigzag", "node_id": "1", "field": "f"}, "Unknown variation type 'zigzag'"),
    ([1], "must be an object"),
    ({"type": "seed", "field": "seed"}, "lacks 'node_id'"),
    ({"type": "seed", "node_id": "1", "field": "seed", "mode": "dice"}, "mode is random"),
    ({"type": "seed", "node_id": "1", "field": "seed", "start": True}, "start must be an int"),
    ({"type": "cycle", "node_id": "1", "field": "f"}, "lacks 'values'"),
    ({"type": "cycle", "node_id": "1", "field": "f", "values": []}, "non-empty list"),
    ({"type": "sweep", "node_id": "1", "field": "f", "start": 0, "stop": 1}, "needs numbers"),
    ({"type": "sweep", "node_id": "1", "field": "f", "start": 0, "stop": 1, "step": 0},
     "must reach its end"),
    ({"type": "sweep", "node_id": "1", "field": "f", "start": 0, "stop": 1e12, "step": 1},
     "at most 10000 values"),
])  # fmt: skip
def test_a_bad_variation_is_named_in_one_place(data, message) -> None:
    with pytest.raises(VariationError, match=message) as refused:
        parse_variation(data, "variations[3]")
    assert refused.value.type == "invalid_variation"


def test_variations_read_back_what_they_write() -> None:
    for variation in (SeedVariation("1", "seed", "random", 5, 9),
                      CycleVariation("1", "text", ("a", "b")),
                      SweepVariation("1", "cfg", 1.0, 2.0, 0.5)):  # fmt: skip
        assert parse_variation(variation_json(variation)) == variation
