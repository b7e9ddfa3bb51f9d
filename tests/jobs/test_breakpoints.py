"""Breakpoints and stepping on jobs, at the service level (SQLite and PostgreSQL)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from midrun.debug.breakpoints import BreakpointError
from midrun.debug.expressions import ExpressionError
from midrun.jobs import breakpoints
from midrun.jobs.service import Jobs
from midrun.jobs.states import JobConflict, JobNotFound, JobState
from midrun.jobs.worker import WorkerPool
from midrun.jobs.workflows import WorkflowNotFound, execute_workflow, save_workflow
from tests.jobs.conftest import result, ticker


@pytest.fixture
def bus(service: Jobs) -> Iterator[list[dict[str, Any]]]:
    seen: list[dict[str, Any]] = []
    unsubscribe = service.bus.subscribe(seen.append)
    yield seen
    unsubscribe()


def workers(service: Jobs) -> WorkerPool:
    """Workers started after the breakpoints are set (a job must not run before)."""
    return WorkerPool(service, ["cpu"])


def paused(service: Jobs, job_id: str) -> Any:
    return service.wait(job_id, [JobState.PAUSED, *(s for s in JobState if s.terminal)])


def kinds(service: Jobs, job_id: str, *wanted: str) -> list[str]:
    return [e["kind"] for e in service.events(job_id) if not wanted or e["kind"] in wanted]


def test_a_breakpoint_before_a_node_pauses_there_once(service, bus) -> None:
    job = service.submit(ticker(steps=5, delay=0))
    bp = breakpoints.create(service, {"node_id": "2"}, job_id=job.id)
    assert (bp["node_id"], bp["position"], bp["enabled"], bp["job_id"]) == ("2", "before",
                                                                           True, job.id)
    with workers(service):
        stopped = paused(service, job.id)
        assert stopped.state == JobState.PAUSED and stopped.paused_by == "breakpoint"
        assert stopped.progress["node"] == "2" and stopped.progress["held"] == "breakpoint"
        hit = [e for e in service.events(job.id) if e["kind"] == "breakpoint_hit"]
        assert hit[0]["node_id"] == "2" and hit[0]["data"]["breakpoint_id"] == bp["id"]
        emitted = [e for e in bus if e["type"] == "midrun.breakpoint_hit"]
        assert emitted == [{"type": "midrun.breakpoint_hit", "job_id": job.id, "node_id": "2",
                            "position": "before", "breakpoint_id": bp["id"]}]
        service.resume(job.id)
        done = service.wait(job.id)
    assert done.state == JobState.COMPLETED and result(done) == (15, [1] * 5)
    assert kinds(service, job.id, "breakpoint_hit") == ["breakpoint_hit"]  # not again


def test_a_step_breakpoint_stops_at_that_step_and_the_result_is_unchanged(service) -> None:
    job = service.submit(ticker(steps=12, delay=0, gain=2))
    breakpoints.create(service, {"node_id": "2", "step": 5}, job_id=job.id)
    with workers(service):
        stopped = paused(service, job.id)
        assert stopped.checkpoint_step == 5 and stopped.paused_by == "breakpoint"
        service.resume(job.id)
        done = service.wait(job.id)
    assert result(done) == (156, [2] * 12)


def test_workflow_breakpoints_apply_to_each_of_its_jobs(service) -> None:
    saved = save_workflow(service, "ticks", ticker(steps=3, delay=0))
    bp = breakpoints.create(service, {"node_id": "3"}, workflow_id=saved["id"])
    assert breakpoints.list_breakpoints(service, workflow_id=saved["id"]) == [bp]
    first = execute_workflow(service, saved["id"])
    second = execute_workflow(service, saved["id"])
    other = service.submit(ticker(steps=3, delay=0))
    with workers(service):
        assert paused(service, first.id).paused_by == "breakpoint"
        assert paused(service, second.id).progress["node"] == "3"
        assert service.wait(other.id).state == JobState.COMPLETED


def test_conditions_decide_and_disabled_breakpoints_do_not_fire(service) -> None:
    low = service.submit(ticker(steps=3, delay=0, gain=1))
    high = service.submit(ticker(steps=3, delay=0, gain=3))
    late = service.submit(ticker(steps=6, delay=0))
    off = service.submit(ticker(steps=3, delay=0))
    for job in (low, high):
        breakpoints.create(service, {"node_id": "2", "condition": "gain >= 3"}, job_id=job.id)
    breakpoints.create(service, {"node_id": "2", "position": "step",
                                 "condition": "step * 2 > 7"}, job_id=late.id)  # fmt: skip
    bp = breakpoints.create(service, {"node_id": "2"}, job_id=off.id)
    assert breakpoints.set_enabled(service, bp["id"], False)["enabled"] is False
    with workers(service):
        assert service.wait(low.id).state == JobState.COMPLETED
        assert paused(service, high.id).state == JobState.PAUSED
        assert paused(service, late.id).checkpoint_step == 4
        assert service.wait(off.id).state == JobState.COMPLETED


def test_a_logpoint_reports_without_pausing(service, bus) -> None:
    job = service.submit(ticker(steps=3, delay=0, gain=2))
    bp = breakpoints.create(service, {"node_id": "2", "step": 2,
                                      "log": "at {step} of {total_steps}, gain {gain}"},
                            job_id=job.id)  # fmt: skip
    with workers(service):
        assert service.wait(job.id).state == JobState.COMPLETED
    logs = [e for e in bus if e["type"] == "midrun.logpoint"]
    assert logs == [{"type": "midrun.logpoint", "job_id": job.id, "node_id": "2", "step": 2,
                     "breakpoint_id": bp["id"], "message": "at 2 of 3, gain 2"}]  # fmt: skip


def test_a_condition_that_passes_a_limit_is_disabled_and_the_job_goes_on(service, bus) -> None:
    job = service.submit(ticker(steps=4, delay=0, gain=2))
    huge = breakpoints.create(service, {"node_id": "2", "position": "step",
                                        "condition": "gain ** 1000000 > 0"},
                              job_id=job.id)  # fmt: skip
    loud = breakpoints.create(service, {"node_id": "2", "step": 2,
                                        "log": "{str(gain) * 10**7}"}, job_id=job.id)  # fmt: skip
    fine = breakpoints.create(service, {"node_id": "2", "step": 3, "log": "gain {gain}"},
                              job_id=job.id)  # fmt: skip
    with workers(service):
        done = service.wait(job.id)
    assert done.state == JobState.COMPLETED and result(done) == (20, [2] * 4)
    stored = {bp["id"]: bp["enabled"] for bp in breakpoints.list_breakpoints(service,
                                                                             job_id=job.id)}
    assert stored == {huge["id"]: False, loud["id"]: False, fine["id"]: True}
    off = [e for e in service.events(job.id) if e["kind"] == "breakpoint_disabled"]
    assert [(e["data"]["breakpoint_id"], e["actor"], e["step"]) for e in off] == [
        (huge["id"], "midrun", 1), (loud["id"], "midrun", 2)]
    assert "'**' would make an integer" in off[0]["data"]["error"]
    assert "'*' would make a str" in off[1]["data"]["error"]
    logs = [e["message"] for e in bus if e["type"] == "midrun.logpoint"]
    assert logs == ["gain 2"]
    assert kinds(service, job.id, "breakpoint_hit") == []


def test_breakpoints_added_while_a_job_runs_are_noticed(service) -> None:
    job = service.submit(ticker(steps=200, delay=0.01))
    with workers(service):
        service.wait(job.id, [JobState.RUNNING])
        breakpoints.create(service, {"node_id": "3"}, job_id=job.id)
        stopped = paused(service, job.id)
    assert stopped.paused_by == "breakpoint" and stopped.progress["node"] == "3"


def test_step_into_over_and_out(service, bus) -> None:
    straight = ticker(steps=4, delay=0, gain=3)
    job = service.submit(straight)
    breakpoints.create(service, {"node_id": "2"}, job_id=job.id)
    with workers(service):
        assert paused(service, job.id).progress["node"] == "2"
        # into: the first step of the node it stopped before
        breakpoints.request_step(service, job.id, "into")
        into = paused(service, job.id)
        assert (into.paused_by, into.checkpoint_step) == ("step", 1)
        breakpoints.request_step(service, job.id, "into")
        assert paused(service, job.id).checkpoint_step == 2
        # out: the end of the node
        breakpoints.request_step(service, job.id, "out")
        out = paused(service, job.id)
        assert (out.progress["node"], out.progress["position"]) == ("2", "after")
        # over: the next node's start
        breakpoints.request_step(service, job.id, "over")
        over = paused(service, job.id)
        assert over.progress["position"] == "before" and over.progress["node"] in ("3", "4")
        service.resume(job.id)
        done = service.wait(job.id)
    assert result(done) == (30, [3] * 4)
    reached = [e for e in service.events(job.id) if e["kind"] == "step_reached"]
    assert [e["data"]["mode"] for e in reached] == ["into", "into", "out", "over"]
    assert not service.get(job.id).request
    assert [e["mode"] for e in bus if e["type"] == "midrun.step_reached"] == [
        "into", "into", "out", "over"]  # fmt: skip


def test_step_over_from_a_breakpoint_before_a_node_goes_to_the_next_node(service) -> None:
    job = service.submit(ticker(steps=3, delay=0))
    breakpoints.create(service, {"node_id": "2"}, job_id=job.id)
    with workers(service):
        paused(service, job.id)
        breakpoints.request_step(service, job.id, "over")
        over = paused(service, job.id)
        assert over.progress["node"] in ("3", "4") and over.paused_by == "step"
        service.resume(job.id)
        assert service.wait(job.id).state == JobState.COMPLETED


def test_stepping_needs_a_paused_job_and_a_known_mode(service) -> None:
    job = service.submit(ticker(steps=3, delay=0))
    with pytest.raises(JobConflict) as conflict:
        breakpoints.request_step(service, job.id, "over")
    assert conflict.value.extra_info["state"] == "queued"
    service.pause(job.id)
    with pytest.raises(BreakpointError, match="sideways"):
        breakpoints.request_step(service, job.id, "sideways")
    with pytest.raises(JobNotFound):
        breakpoints.request_step(service, "nope", "over")


def test_breakpoints_are_checked_when_set(service) -> None:
    job = service.submit(ticker(steps=3, delay=0))
    bad: list[tuple[dict[str, Any], type[Exception], str]] = [
        ({"node_id": "99"}, BreakpointError, "No node '99'"),
        ({}, BreakpointError, "needs node_id"),
        ({"node_id": 2}, BreakpointError, "needs node_id"),
        ({"node_id": "2", "step": 0}, BreakpointError, "step must be >= 1"),
        ({"node_id": "2", "step": "5"}, BreakpointError, "step must be an integer"),
        ({"node_id": "2", "step": True}, BreakpointError, "step must be an integer"),
        ({"node_id": "2", "when": 1}, BreakpointError, "Unknown breakpoint fields"),
        ({"node_id": "2", "position": "inside"}, BreakpointError, "position"),
        ({"node_id": "2", "condition": "__import__('os')"}, ExpressionError, "not allowed"),
        ({"node_id": "2", "condition": "step >"}, ExpressionError, "not valid"),
        ({"node_id": "2", "log": "x {"}, ExpressionError, "Unclosed"),
        ({"node_id": "2", "condition": "(10**10000)**10000 > 0"}, ExpressionError,
         "refused: '\\*\\*' would make an integer"),
        ({"node_id": "2", "log": "{len('a'*100000*100000)}"}, ExpressionError,
         "refused: '\\*' would make a str"),
    ]
    for data, kind, message in bad:
        with pytest.raises(kind, match=message):
            breakpoints.create(service, data, job_id=job.id)
    with pytest.raises(JobNotFound):
        breakpoints.create(service, {"node_id": "2"}, job_id="nope")
    with pytest.raises(WorkflowNotFound):
        breakpoints.create(service, {"node_id": "2"}, workflow_id="nope")
    assert breakpoints.list_breakpoints(service, job_id=job.id) == []


def test_breakpoints_are_listed_toggled_and_removed(service) -> None:
    job = service.submit(ticker(steps=3, delay=0))
    a = breakpoints.create(service, {"node_id": "2", "step": 2, "condition": "gain > 0"},
                           job_id=job.id)  # fmt: skip
    b = breakpoints.create(service, {"node_id": "3", "enabled": False}, job_id=job.id)
    assert [x["id"] for x in breakpoints.list_breakpoints(service, job_id=job.id)] == [
        a["id"], b["id"]]  # fmt: skip
    assert (a["position"], a["step"], a["condition"]) == ("step", 2, "gain > 0")
    assert breakpoints.set_enabled(service, b["id"], True)["enabled"] is True
    assert breakpoints.get(service, b["id"])["enabled"] is True
    assert breakpoints.remove(service, a["id"])["id"] == a["id"]
    assert [x["id"] for x in breakpoints.list_breakpoints(service, job_id=job.id)] == [b["id"]]
    with pytest.raises(breakpoints.BreakpointNotFound):
        breakpoints.remove(service, a["id"])
    assert {"breakpoint_set", "breakpoint_enabled", "breakpoint_removed"} <= set(
        kinds(service, job.id))
