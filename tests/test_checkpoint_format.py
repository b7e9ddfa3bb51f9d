"""The run-state (checkpoint) format: typed, versioned, and refused clearly when foreign.

docs/ARCHITECTURE.md ("Control points and the step protocol") documents the layout.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from midrun.core.errors import RunStateError
from midrun.debug.trace import StopAt
from midrun.engine.checkpoint import InFlightStep, StateGraphCheckpoint, WorkflowCheckpoint
from midrun.engine.executor import Executor, RunStatus
from midrun.engine.runstate import FORMAT, READABLE_VERSIONS, VERSION, RunState
from midrun.graph.stategraph import END, StateGraph
from midrun.graph.types import Steppable
from midrun.graph.workflow import Workflow
from tests.test_executor import steps_workflow


async def paused_workflow(registry, tmp_path: Path) -> tuple[RunState, Path]:
    """A workflow run paused at step 3 of its steppable node '2', saved to disk."""
    result = await Executor(hooks=[StopAt("2", step=3)]).run(steps_workflow(), registry)
    assert result.status == RunStatus.SUSPENDED
    return result.state, result.state.save(tmp_path / "state")


def rewrite(directory: Path, change: Any) -> Path:
    """Apply ``change(header)`` to a saved run.json (in place)."""
    path = directory / "run.json"
    header = json.loads(path.read_text())
    change(header)
    path.write_text(json.dumps(header))
    return path


def as_version_1(directory: Path) -> Path:
    """Turn a saved state into the version-1 layout (no format marker, no blob list)."""

    def change(header: dict[str, Any]) -> None:
        del header["format"], header["blobs"]
        header["version"] = 1

    return rewrite(directory, change)


# -- the current version --------------------------------------------------------------


async def test_the_current_version_round_trips_with_types(registry, tmp_path) -> None:
    state, saved = await paused_workflow(registry, tmp_path)
    header = json.loads((saved / "run.json").read_text())
    assert header["format"] == FORMAT and header["version"] == VERSION == 2
    assert header["kind"] == "workflow" and set(header["blobs"]) == set(state.blobs)

    loaded = RunState.load(saved)
    plan = loaded.workflow_checkpoint()
    assert isinstance(plan, WorkflowCheckpoint) and loaded.version == VERSION
    assert isinstance(plan.in_flight["2"], InFlightStep) and plan.in_flight["2"].step == 3
    assert plan == state.plan and loaded.blobs == state.blobs
    assert loaded.steps() == {"2": 3}
    assert WorkflowCheckpoint.from_json(plan.to_json()) == plan
    with pytest.raises(RunStateError, match="workflow run, not a stategraph run"):
        loaded.stategraph_checkpoint()

    resumed = await Executor().resume(loaded, registry)
    straight = await Executor().run(steps_workflow(), registry)
    assert resumed.ok and resumed.plan.ui == straight.plan.ui


class Count(Steppable):
    def start(self, inputs: dict[str, Any]) -> dict[str, Any]:
        return {"n": 0, "data": b"\x00\x01"}

    def step(self, state: dict[str, Any]) -> dict[str, Any]:
        return {**state, "n": state["n"] + 1}

    def done(self, state: dict[str, Any]) -> bool:
        return state["n"] >= 4

    def finish(self, state: dict[str, Any]) -> dict[str, Any]:
        return {"count": state["n"]}


async def test_a_state_graph_checkpoint_round_trips_with_types(tmp_path) -> None:
    graph = StateGraph()
    graph.add_node("count", Count())
    graph.set_entry_point("count")
    graph.add_edge("count", END)
    compiled = graph.compile()
    paused = await compiled.invoke({"x": (1, 2)}, hooks=[StopAt("count", step=2)])
    assert paused.run_state is not None
    loaded = RunState.load(paused.run_state.save(tmp_path / "g"))
    plan = loaded.stategraph_checkpoint()
    assert isinstance(plan, StateGraphCheckpoint) and plan.frontier == ["count"]
    assert StateGraphCheckpoint.from_json(plan.to_json()) == plan
    assert loaded.steps() == {"count": 2} and loaded.blobs  # the bytes are a blob
    with pytest.raises(RunStateError, match="stategraph run, not a workflow run"):
        loaded.workflow_checkpoint()
    done = await compiled.resume(loaded)
    assert done.success and done.state["count"] == 4 and done.state["x"] == (1, 2)


def test_a_plan_of_the_wrong_type_is_refused_when_built() -> None:
    with pytest.raises(TypeError, match="WorkflowCheckpoint"):
        RunState("workflow", "r", StateGraphCheckpoint({}, [], 1))
    with pytest.raises(RunStateError, match="Unknown run state kind 'sampler'"):
        RunState("sampler", "r", WorkflowCheckpoint({}, []))


# -- version 1 ------------------------------------------------------------------------


async def test_a_version_1_file_is_read_and_resumes(registry, tmp_path) -> None:
    assert 1 in READABLE_VERSIONS
    _, saved = await paused_workflow(registry, tmp_path)
    as_version_1(saved)
    loaded = RunState.load(saved)
    assert loaded.version == 1 and loaded.steps() == {"2": 3}
    resumed = await Executor().resume(loaded, registry)
    straight = await Executor().run(steps_workflow(), registry)
    assert resumed.ok and resumed.plan.ui == straight.plan.ui
    # Saving it again writes the current version.
    again = json.loads((loaded.save(tmp_path / "again") / "run.json").read_text())
    assert again["version"] == VERSION and again["format"] == FORMAT


def test_a_version_1_file_missing_a_blob_it_refers_to_is_refused(tmp_path) -> None:
    plan = WorkflowCheckpoint(
        {}, [], in_flight={"3": InFlightStep(1, {"$t": "bytes", "blob": "b0"})}
    )
    saved = RunState("workflow", "r", plan, {"b0": b"abc"}).save(tmp_path / "s")
    as_version_1(saved)
    assert RunState.load(saved).blobs == {"b0": b"abc"}
    (saved / "blobs" / "b0.bin").unlink()
    with pytest.raises(RunStateError, match=r"run\.json is incomplete: blob .*b0\.bin is missing"):
        RunState.load(saved)


# -- refusals -------------------------------------------------------------------------


def saved_state(tmp_path: Path) -> Path:
    plan = WorkflowCheckpoint(
        {"1": {"class_type": "Const", "inputs": {"value": 1}}},
        ["1"],
        values={"1": {"$t": "bytes", "blob": "b0"}},
        finished=["1"],
    )
    return RunState("workflow", "r", plan, {"b0": b"12345"}).save(tmp_path / "s")


def test_a_newer_version_is_refused_saying_what_to_do(tmp_path) -> None:
    saved = saved_state(tmp_path)
    path = rewrite(saved, lambda h: h.update(version=VERSION + 1))
    with pytest.raises(RunStateError) as refused:
        RunState.load(saved)
    message = str(refused.value)
    assert str(path) in message and f"format version {VERSION + 1}" in message
    assert "newer midrun" in message and "reads versions 1 and 2" in message


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ('{"nodes": [], "links": []}', "is not a midrun run state (format None"),
        ('{"format": "other.tool", "version": 2}', "format 'other.tool'"),
        ("[1, 2, 3]", "is not a midrun run state (a JSON list"),
        ('{"version": 1, "kind": "workflow"', "is corrupt"),
        (b"\xff\xfe\x00", "is corrupt"),
    ],
)
def test_foreign_or_corrupt_json_is_refused_naming_the_file(tmp_path, content, problem) -> None:
    saved = saved_state(tmp_path)
    path = saved / "run.json"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    with pytest.raises(RunStateError) as refused:
        RunState.load(saved)
    assert str(path) in str(refused.value) and problem in str(refused.value)


def test_an_unknown_kind_is_refused_naming_the_file(tmp_path) -> None:
    saved = saved_state(tmp_path)
    path = rewrite(saved, lambda h: h.update(kind="sampler"))
    with pytest.raises(RunStateError, match="kind 'sampler', which this midrun does not know"):
        RunState.load(saved)
    with pytest.raises(RunStateError, match=str(path)):
        RunState.load(saved)


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (lambda h: h["plan"].pop("finished"), "plan field 'finished' is missing"),
        (lambda h: h["plan"].update(targets="1"), "plan field 'targets' is not a list"),
        (
            lambda h: h["plan"].update(in_flight={"1": {"state": None}}),
            "'in_flight' entry '1' has no step count",
        ),
        (lambda h: h.update(plan=None), "plan is not an object"),
        (lambda h: h.pop("run_id"), "has no run_id"),
        (lambda h: h["blobs"].update({"../escape": 1}), "blob name '../escape'"),
        (lambda h: h.update(blobs={}), "refers to unlisted blobs b0"),
        (lambda h: h.pop("version"), "has no version number"),
    ],
)
def test_a_malformed_run_json_is_refused_naming_the_field(tmp_path, change, problem) -> None:
    saved = saved_state(tmp_path)
    path = rewrite(saved, change)
    with pytest.raises(RunStateError) as refused:
        RunState.load(saved)
    assert str(path) in str(refused.value) and problem in str(refused.value)


def test_a_missing_or_truncated_blob_is_refused_naming_it(tmp_path) -> None:
    saved = saved_state(tmp_path)
    blob = saved / "blobs" / "b0.bin"
    blob.write_bytes(b"12")
    with pytest.raises(RunStateError, match=r"b0\.bin has 2 bytes, run\.json says 5"):
        RunState.load(saved)
    blob.unlink()
    with pytest.raises(RunStateError) as refused:
        RunState.load(saved)
    assert f"blob {blob} is missing" in str(refused.value)
    assert str(saved / "run.json") in str(refused.value)


def test_no_run_state_at_all_is_refused(tmp_path) -> None:
    with pytest.raises(RunStateError, match=r"run\.json missing"):
        RunState.load(tmp_path / "nothing")


def test_the_saved_workflow_is_the_api_format(tmp_path) -> None:
    saved = RunState.load(saved_state(tmp_path))
    assert Workflow.from_api(saved.workflow_checkpoint().workflow).nodes.keys() == {"1"}
