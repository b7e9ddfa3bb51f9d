"""Edge cases of the engine found in review: cache keys of nodes that read hidden inputs,
failing hooks and siblings, run states that cannot be saved, undeclared links, evicted
cache entries, deep chains, and runs that stop right at the end."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from midrun.core.errors import MidrunError, RunStateError
from midrun.engine.cache import OutputCache
from midrun.engine.checkpoint import StateGraphCheckpoint, WorkflowCheckpoint
from midrun.engine.control import ControlPoint, Directive, Hook, Position, RunEvent
from midrun.engine.executor import Executor, RunStatus
from midrun.engine.runstate import RunState
from midrun.engine.workflow_plan import RunContext
from midrun.graph.registry import NodeRegistry
from midrun.graph.stategraph import END, StateGraph
from midrun.graph.types import (
    COMBO,
    HIDDEN_RUN_CONTEXT,
    INT,
    InputSpec,
    NodeResult,
    NodeType,
    OutputSpec,
)
from midrun.graph.ui_format import _Converter, ui_to_api
from midrun.graph.validation import in_choices, validate
from midrun.graph.workflow import Workflow
from tests import testnodes
from tests.test_ui_format import basic, inp, node, out

# -- extra node types ----------------------------------------------------------------

SEEN_CONTEXTS: list[str] = []


def _save(value: Any, context: RunContext) -> NodeResult:
    SEEN_CONTEXTS.append(context.run_id)
    return NodeResult(ui={"saved": [value]})


class _Sleepy:
    """Steppable whose state holds an unencodable lock; each step sleeps."""

    def __init__(self, seconds: float = 0.0, lock: bool = False) -> None:
        self.seconds = seconds
        self.lock = lock
        self.steps_taken = 0

    def start(self, inputs: dict[str, Any]) -> dict[str, Any]:
        state: dict[str, Any] = {"i": 0, "steps": inputs["steps"]}
        if self.lock:
            state["lock"] = threading.Lock()
        return state

    def step(self, state: dict[str, Any]) -> dict[str, Any]:
        time.sleep(self.seconds)
        self.steps_taken += 1
        return {**state, "i": state["i"] + 1}

    def done(self, state: dict[str, Any]) -> bool:
        return state["i"] >= state["steps"]

    def finish(self, state: dict[str, Any]) -> tuple[int]:
        return (state["i"],)


def _raises_midrun(value: int) -> tuple[int]:
    raise MidrunError("the node refuses")


def _opaque_ui(value: int) -> NodeResult:
    return NodeResult(ui={"thing": [object()]})


def extra_registry(sleepy: _Sleepy | None = None, locked: _Sleepy | None = None) -> NodeRegistry:
    registry = testnodes.registry()
    steps = InputSpec("steps", INT, default=5, min=0, max=100000)
    for node_type in (
        NodeType(
            "Save",
            (InputSpec("value", "*"), InputSpec("context", HIDDEN_RUN_CONTEXT, section="hidden")),
            (),
            _save,
            output_node=True,
        ),
        NodeType("Sleepy", (steps,), (OutputSpec(INT),), sleepy or _Sleepy(0.005)),
        NodeType("Locked", (steps,), (OutputSpec(INT),), locked or _Sleepy(lock=True)),
        NodeType("Refuses", (InputSpec("value", INT),), (OutputSpec(INT),), _raises_midrun),
        NodeType("OpaqueUi", (InputSpec("value", INT),), (), _opaque_ui, output_node=True),
        NodeType(
            "Pick",
            (InputSpec("n", COMBO, choices=(1, 2)),),
            (OutputSpec(INT),),
            lambda n: (n,),
        ),
    ):
        registry.register(node_type)
    return registry


class StopAtStep(Hook):
    def __init__(self, node_id: str, step: int, directive: Directive) -> None:
        self.node_id, self.step, self.directive = node_id, step, directive
        self.events: list[str] = []

    async def on_point(self, point: ControlPoint) -> Directive | None:
        if point.node_id == self.node_id and point.step == self.step:
            return self.directive
        return None

    async def on_event(self, event: RunEvent) -> None:
        self.events.append(event.kind)


# -- cache keys and hidden inputs ---------------------------------------------------


async def test_unique_id_readers_are_cached_per_node(registry: NodeRegistry) -> None:
    cache = OutputCache()
    first = Workflow.from_api(
        {
            "1": {"class_type": "Const", "inputs": {"value": 4}},
            "3": {"class_type": "Output", "inputs": {"value": ["1", 0]}},
        }
    )
    await Executor().run(first, registry, cache=cache)
    second = Workflow.from_api(
        {
            "1": {"class_type": "Const", "inputs": {"value": 4}},
            "7": {"class_type": "Output", "inputs": {"value": ["1", 0]}},
        }
    )
    result = await Executor().run(second, registry, cache=cache)
    # Same inputs, different node: its UNIQUE_ID differs, so it is not the cached "3".
    assert result.plan.ui["7"]["node"] == ["7"]
    assert result.plan.cached == ["1"]


async def test_nodes_reading_the_run_context_rerun_every_run() -> None:
    registry = extra_registry()
    cache = OutputCache()
    workflow = Workflow.from_api(
        {
            "1": {"class_type": "Const", "inputs": {"value": 4}},
            "2": {"class_type": "Save", "inputs": {"value": ["1", 0]}},
        }
    )
    SEEN_CONTEXTS.clear()
    await Executor().run(workflow, registry, cache=cache, run_id="a")
    await Executor().run(workflow, registry, cache=cache, run_id="b")
    assert SEEN_CONTEXTS == ["a", "b"]


async def test_the_callers_context_is_not_changed() -> None:
    registry = extra_registry()
    context = RunContext(run_id="template")
    workflow = Workflow.from_api(
        {
            "1": {"class_type": "Const", "inputs": {"value": 4}},
            "2": {"class_type": "Save", "inputs": {"value": ["1", 0]}},
        }
    )
    SEEN_CONTEXTS.clear()
    await Executor().run(workflow, registry, context=context, run_id="r1")
    assert SEEN_CONTEXTS == ["r1"] and context.run_id == "template"


async def test_an_evicted_ancestor_of_cached_nodes_does_not_rerun(
    registry: NodeRegistry, calls
) -> None:
    workflow = Workflow.from_api(
        {
            "1": {"class_type": "Const", "inputs": {"value": 1}},
            "2": {"class_type": "Add", "inputs": {"a": ["1", 0], "b": ["1", 0]}},
            "3": {"class_type": "Output", "inputs": {"value": ["2", 0]}},
            "4": {"class_type": "Const", "inputs": {"value": 5}},
            "5": {"class_type": "Output", "inputs": {"value": ["4", 0], "label": "other"}},
        }
    )
    cache = OutputCache(max_entries=10)
    await Executor().run(workflow, registry, cache=cache)
    assert calls["Const"] == 2
    # Evict Const 1 only; Add 2 and Output 3 stay cached; Output 5 changes.
    first = next(iter(cache._entries))
    del cache._entries[first]
    workflow["5"].inputs["label"] = "changed"
    result = await Executor().run(workflow, registry, cache=cache)
    assert result.ok
    assert calls["Const"] == 2 and calls["Add"] == 1  # nothing upstream of 3 re-ran
    assert result.plan.executed == ["5"]


# -- hooks, siblings and errors ------------------------------------------------------


class BrokenEvents(Hook):
    async def on_event(self, event: RunEvent) -> None:
        raise RuntimeError("listener down")


async def test_a_hook_failing_on_an_event_does_not_break_the_run(
    registry: NodeRegistry,
) -> None:
    listener = StopAtStep("none", -1, Directive.abort())
    workflow = Workflow.from_api(
        {
            "1": {"class_type": "Const", "inputs": {"value": 1}},
            "2": {"class_type": "Output", "inputs": {"value": ["1", 0]}},
        }
    )
    result = await Executor(hooks=[BrokenEvents(), listener]).run(workflow, registry)
    assert result.ok
    assert listener.events == ["started", "executed", "executed", "completed"]


async def test_a_failing_node_stops_its_running_siblings() -> None:
    sleepy = _Sleepy(0.01)
    registry = extra_registry(sleepy=sleepy)
    workflow = Workflow.from_api(
        {
            "1": {"class_type": "Sleepy", "inputs": {"steps": 500}},
            "2": {"class_type": "Output", "inputs": {"value": ["1", 0]}},
            "3": {"class_type": "Boom", "inputs": {"value": 1, "message": "down"}},
            "4": {"class_type": "Output", "inputs": {"value": ["3", 0]}},
        }
    )
    started = time.perf_counter()
    result = await Executor(max_concurrency=2).run(workflow, registry)
    assert result.status == RunStatus.FAILED
    assert result.error is not None and "down" in result.error.message
    assert sleepy.steps_taken < 100  # stopped early, not after all 500 steps
    assert time.perf_counter() - started < 3


async def test_a_midrun_error_from_node_code_names_the_node_and_reaches_hooks() -> None:
    registry = extra_registry()
    seen: list[Position] = []

    class Watch(Hook):
        async def on_point(self, point: ControlPoint) -> Directive | None:
            seen.append(point.position)
            return None

    workflow = Workflow.from_api(
        {
            "1": {"class_type": "Refuses", "inputs": {"value": 1}},
            "2": {"class_type": "Output", "inputs": {"value": ["1", 0]}},
        }
    )
    result = await Executor(hooks=[Watch()]).run(workflow, registry)
    assert result.status == RunStatus.FAILED
    assert result.error is not None and result.error.extra_info["node_id"] == "1"
    assert Position.ERROR in seen


# -- run states that cannot be saved -------------------------------------------------


def locked_workflow() -> Workflow:
    return Workflow.from_api(
        {
            "1": {"class_type": "Locked", "inputs": {"steps": 5}},
            "2": {"class_type": "Output", "inputs": {"value": ["1", 0]}},
        }
    )


async def test_abort_with_unsaveable_step_state_still_aborts() -> None:
    hook = StopAtStep("1", 2, Directive.abort("enough"))
    result = await Executor(hooks=[hook]).run(locked_workflow(), extra_registry())
    assert result.status == RunStatus.ABORTED and result.reason == "enough"
    assert result.state is None
    assert hook.events[-1] == "aborted"


async def test_suspend_with_unsaveable_step_state_fails_clearly() -> None:
    hook = StopAtStep("1", 2, Directive.suspend())
    result = await Executor(hooks=[hook]).run(locked_workflow(), extra_registry())
    assert result.status == RunStatus.FAILED
    assert isinstance(result.error, RunStateError)
    assert "not serialisable" in result.error.message
    assert hook.events[-1] == "failed"


async def test_suspend_with_unsaveable_ui_fails_clearly() -> None:
    workflow = Workflow.from_api(
        {
            "1": {"class_type": "OpaqueUi", "inputs": {"value": 1}},
            "2": {"class_type": "Sleepy", "inputs": {"steps": 5}},
            "3": {"class_type": "Output", "inputs": {"value": ["2", 0]}},
        }
    )
    hook = StopAtStep("2", 2, Directive.suspend())
    result = await Executor(hooks=[hook]).run(workflow, extra_registry())
    assert result.status == RunStatus.FAILED
    assert isinstance(result.error, RunStateError)
    assert hook.events[-1] == "failed"


async def test_resuming_needs_only_unfinished_nodes_to_be_runnable(tmp_path) -> None:
    """A node declared-but-unimplemented in the resuming process is fine if it finished."""
    runnable = extra_registry()
    workflow = Workflow.from_api(
        {
            "1": {"class_type": "Const", "inputs": {"value": 3}},
            "2": {"class_type": "CountSteps", "inputs": {"start": ["1", 0], "steps": 4}},
            "3": {"class_type": "Output", "inputs": {"value": ["2", 0]}},
        }
    )
    hook = StopAtStep("2", 2, Directive.suspend())
    paused = await Executor(hooks=[hook]).run(workflow, runnable)
    assert paused.status == RunStatus.SUSPENDED and paused.state is not None
    declared_only = testnodes.registry()
    declared_only.register(
        NodeType("Const", (InputSpec("value", INT),), (OutputSpec(INT),)), replace=True
    )
    done = await Executor().resume(paused.state, declared_only)
    assert done.ok and done.plan.ui["3"]["value"] == [30]


async def test_a_state_graph_run_state_is_refused_by_workflow_resume(
    registry: NodeRegistry,
) -> None:
    state = RunState("stategraph", "r1", StateGraphCheckpoint({}, [], recursion_limit=1))
    with pytest.raises(RunStateError, match="stategraph run"):
        await Executor().resume(state, registry)


def test_a_crash_between_the_renames_of_save_keeps_the_previous_state(tmp_path) -> None:
    target = tmp_path / "run"
    RunState("workflow", "r1", WorkflowCheckpoint({}, ["1"])).save(target)
    RunState("workflow", "r1", WorkflowCheckpoint({}, ["2"])).save(target)
    # Simulate the crash: the current state was moved aside, the new one never arrived.
    target.rename(tmp_path / ".run.old")
    assert RunState.load(target).workflow_checkpoint().targets == ["2"]


# -- validation ---------------------------------------------------------------------


async def test_links_into_undeclared_inputs_are_ignored(registry: NodeRegistry, calls) -> None:
    workflow = Workflow.from_api(
        {
            "1": {"class_type": "Const", "inputs": {"value": 1, "extra": ["9", 0]}},
            "2": {"class_type": "Output", "inputs": {"value": ["1", 0], "ghost": ["404", 0]}},
            "9": {"class_type": "Boom", "inputs": {"value": 1}},
        }
    )
    result = await Executor().run(workflow, registry)
    assert result.ok and calls["Boom"] == 0


def test_a_huge_number_is_an_invalid_input_not_a_crash(registry: NodeRegistry) -> None:
    workflow = Workflow.from_api(
        {
            "1": {"class_type": "Const", "inputs": {"value": 1}},
            "2": {"class_type": "Scale", "inputs": {"x": ["1", 0], "factor": 10**400}},
            "3": {"class_type": "Output", "inputs": {"value": ["2", 0]}},
        }
    )
    result = validate(workflow, registry)
    assert result.node_errors["2"]["errors"][0]["type"] == "invalid_input_type"


def test_true_is_not_the_combo_choice_1() -> None:
    assert in_choices(1, [1, 2]) and not in_choices(True, [1, 2])
    registry = extra_registry()
    workflow = Workflow.from_api(
        {
            "1": {"class_type": "Pick", "inputs": {"n": True}},
            "2": {"class_type": "Output", "inputs": {"value": ["1", 0]}},
        }
    )
    result = validate(workflow, registry)
    assert result.node_errors["1"]["errors"][0]["type"] == "value_not_in_list"


async def test_a_very_deep_chain_validates_and_runs(registry: NodeRegistry) -> None:
    depth = 3000
    document: dict[str, Any] = {"0": {"class_type": "Const", "inputs": {"value": 1}}}
    for i in range(1, depth):
        document[str(i)] = {"class_type": "Add", "inputs": {"a": [str(i - 1), 0], "b": 0}}
    document["out"] = {"class_type": "Output", "inputs": {"value": [str(depth - 1), 0]}}
    workflow = Workflow.from_api(document)
    assert validate(workflow, registry).ok
    result = await Executor().run(workflow, registry)
    assert result.ok and result.plan.ui["out"]["value"] == [1]


def test_a_long_bypass_chain_resolves_in_linear_time(
    registry: NodeRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each bypassed node has two INT inputs fed by the previous one, and the first has
    none: ComfyUI picks one input per node, so resolution must not branch."""
    length = 24
    document = basic()
    links = [k for k in document["links"] if k[0] != 3]
    chain = []
    for i in range(length):
        node_id = 100 + i
        a = b = None
        if i:
            a, b = 1000 + 2 * i, 1001 + 2 * i
            links += [
                [a, node_id - 1, 0, node_id, 0, "INT"],
                [b, node_id - 1, 0, node_id, 1, "INT"],
            ]
        chain.append(
            node(
                node_id,
                "Add",
                mode=4,
                inputs=[inp("a", "INT", a), inp("b", "INT", b)],
                outputs=[out("INT", [])],
            )
        )
    links.append([999, 100 + length - 1, 0, 4, 0, "INT"])
    document["nodes"] += chain
    document["nodes"][3]["inputs"][0]["link"] = 999
    document["links"] = links
    calls = 0
    original = _Converter._resolve_link

    def counting(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        nonlocal calls
        calls += 1
        return original(self, *args, **kwargs)

    monkeypatch.setattr(_Converter, "_resolve_link", counting)
    api = ui_to_api(document, registry).to_api()
    assert "value" not in api["4"]["inputs"]  # nothing live feeds the chain
    assert calls <= 2 * length


# -- state graphs -------------------------------------------------------------------


async def test_a_graph_stopped_after_its_last_node_is_complete() -> None:
    graph = StateGraph()
    graph.add_node("only", lambda state: {"n": state.get("n", 0) + 1})
    graph.set_entry_point("only")
    graph.add_conditional_edges("only", lambda state: "stop", {"stop": END, "again": "only"})

    class PauseAfter(Hook):
        async def on_point(self, point: ControlPoint) -> Directive | None:
            if point.position == Position.AFTER:
                return Directive.suspend()
            return None

    result = await graph.compile().invoke({}, hooks=[PauseAfter()])
    assert result.status == RunStatus.COMPLETED and result.success
    assert result.state == {"n": 1}


async def test_a_graph_stopped_mid_loop_is_suspended_at_the_next_node() -> None:
    graph = StateGraph()
    graph.add_node("only", lambda state: {"n": state.get("n", 0) + 1})
    graph.set_entry_point("only")
    graph.add_conditional_edges(
        "only", lambda state: "stop" if state["n"] >= 3 else "again", {"stop": END, "again": "only"}
    )

    class PauseOnce(Hook):
        paused = False

        async def on_point(self, point: ControlPoint) -> Directive | None:
            if point.position == Position.AFTER and not self.paused:
                self.paused = True
                return Directive.suspend()
            return None

    compiled = graph.compile()
    result = await compiled.invoke({}, hooks=[PauseOnce()])
    assert result.status == RunStatus.SUSPENDED and result.run_state is not None
    assert result.run_state.stategraph_checkpoint().frontier == ["only"]
    finished = await compiled.resume(result.run_state)
    assert finished.success and finished.state == {"n": 3}
