"""Editing a suspended run: pending nodes take new values, finished ones are recomputed
with their dependents, a node mid-run takes hot inputs through ``resume`` or refuses."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from midrun.core.errors import InputNotHotSwappable
from midrun.debug.trace import StopAt
from midrun.engine.control import Position
from midrun.engine.edits import EditError, edit_suspended
from midrun.engine.executor import Executor, RunStatus
from midrun.engine.runstate import RunState
from midrun.engine.workflow_plan import RunContext
from midrun.graph.workflow import Workflow
from midrun.nodes import builtin_registry

LIFE = Path(__file__).resolve().parent.parent / "midrun" / "examples" / "life.json"


@pytest.fixture
def registry():
    return builtin_registry()


def life(generations: int | None = None) -> Workflow:
    doc = json.loads(LIFE.read_text())
    if generations is not None:
        doc["2"]["inputs"]["generations"] = generations
    return Workflow.from_api(doc)


def run(registry, workflow, tmp_path, *hooks):
    context = RunContext(output_dir=tmp_path)
    return asyncio.run(Executor(hooks=hooks).run(workflow, registry, context=context))


def text(result) -> str:
    assert result.status == RunStatus.COMPLETED, result.error
    return result.plan.ui["4"]["text"][0]


def paused(registry, tmp_path, step: int = 20) -> RunState:
    result = run(registry, life(), tmp_path, StopAt("2", Position.STEP, step))
    assert result.status == RunStatus.SUSPENDED
    # Through disk, as a paused job is.
    return RunState.load(result.state.save(tmp_path / "state"))


def resume(registry, state, tmp_path):
    context = RunContext(output_dir=tmp_path)
    return asyncio.run(Executor().resume(state, registry, context=context))


def test_hot_input_of_the_running_node(registry, tmp_path) -> None:
    state = edit_suspended(paused(registry, tmp_path), "2", "generations", 40, registry)
    assert text(resume(registry, state, tmp_path)) == text(
        run(registry, life(generations=40), tmp_path)
    )


def test_finished_upstream_edit_reaching_a_running_node_is_refused(registry, tmp_path) -> None:
    """Refused when edited, naming the mid-run node's cold input, not when resumed."""
    state = paused(registry, tmp_path)
    with pytest.raises(InputNotHotSwappable) as refused:
        edit_suspended(state, "1", "seed", 7, registry)
    assert refused.value.extra_info["input_name"] == "grid"
    assert refused.value.extra_info["node_id"] == "2"
    assert refused.value.extra_info["edited"] == "1.seed"


def test_pending_node_takes_the_new_value(registry, tmp_path) -> None:
    state = edit_suspended(paused(registry, tmp_path), "4", "filename_prefix", "edited", registry)
    result = resume(registry, state, tmp_path)
    assert result.plan.ui["4"]["files"][0]["filename"].startswith("edited_")


def test_finished_nodes_downstream_are_recomputed(registry, tmp_path) -> None:
    """Edited after the whole graph ran up to the output's input: the renderer and its
    dependents run again."""
    result = run(registry, life(), tmp_path, StopAt("4", Position.BEFORE))
    state = RunState.load(result.state.save(tmp_path / "s"))
    assert "2" in state.workflow_checkpoint().finished
    edited = edit_suspended(state, "2", "generations", 10, registry)
    values = edited.workflow_checkpoint().values
    assert values["2"] is None and values["3"] is None
    assert text(resume(registry, edited, tmp_path)) == text(
        run(registry, life(generations=10), tmp_path)
    )
    assert state.workflow_checkpoint().values["3"] is not None  # the original is left as it was


@pytest.mark.parametrize(
    ("node", "name", "value", "match"),
    [
        ("9", "x", 1, "not in this run"),
        ("2", "grid", 3, "connected to another node"),
        ("2", "nope", 3, "no input"),
        ("2", "generations", -5, "refused"),
        ("1", "density", "dense", "refused"),
    ],
)
def test_bad_edits_are_refused_with_the_reason(registry, tmp_path, node, name, value, match):
    state = paused(registry, tmp_path)
    with pytest.raises(EditError, match=match):
        edit_suspended(state, node, name, value, registry)
