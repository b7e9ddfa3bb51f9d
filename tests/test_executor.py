"""The executor: caching, dirty re-runs, concurrency, the steppable protocol, control
points, suspend/resume (also in a new process), abort and errors."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from midrun.core.errors import NodeExecutionError, NodeNotImplementedError, RunStateError
from midrun.debug.trace import StopAt, Tracer
from midrun.engine.cache import OutputCache
from midrun.engine.control import ControlPoint, Directive, Hook, Position
from midrun.engine.executor import Executor, RunStatus, WorkflowInvalidError
from midrun.engine.runstate import RunState
from midrun.graph.registry import NodeRegistry
from midrun.graph.types import INT, InputSpec, NodeType, OutputSpec
from midrun.graph.workflow import Workflow

ROOT = Path(__file__).resolve().parent.parent


def steps_workflow(steps: int = 10, start: int = 3) -> Workflow:
    return Workflow.from_api(
        {
            "1": {"class_type": "Const", "inputs": {"value": start}},
            "2": {"class_type": "CountSteps", "inputs": {"start": ["1", 0], "steps": steps}},
            "3": {"class_type": "Output", "inputs": {"value": ["2", 0]}},
            "4": {"class_type": "Output", "inputs": {"value": ["2", 1], "label": "trace"}},
        }
    )


def diamond() -> Workflow:
    return Workflow.from_api(
        {
            "1": {"class_type": "Const", "inputs": {"value": 1}},
            "2": {"class_type": "Const", "inputs": {"value": 10}},
            "3": {"class_type": "Add", "inputs": {"a": ["1", 0], "b": ["2", 0]}},
            "4": {"class_type": "Add", "inputs": {"a": ["3", 0], "b": ["2", 0]}},
            "5": {"class_type": "Output", "inputs": {"value": ["4", 0]}},
            "6": {"class_type": "Const", "inputs": {"value": 99}},  # not an ancestor of an output
        }
    )


def ui_value(result, node_id: str):
    return result.plan.ui[node_id]["value"][0]


async def test_runs_only_output_ancestry(registry: NodeRegistry, calls) -> None:
    tracer = Tracer()
    result = await Executor(hooks=[tracer]).run(diamond(), registry)
    assert result.status == RunStatus.COMPLETED
    assert ui_value(result, "5") == 21
    assert "6" not in tracer.nodes()
    assert calls["Const"] == 2 and calls["Add"] == 2
    assert result.plan.ui["5"]["node"] == ["5"]  # hidden UNIQUE_ID


async def test_cache_skips_unchanged_nodes_across_runs(registry: NodeRegistry, calls) -> None:
    cache = OutputCache()
    executor = Executor()
    first = await executor.run(diamond(), registry, cache=cache)
    assert sorted(first.plan.executed) == ["1", "2", "3", "4", "5"]
    second = await executor.run(diamond(), registry, cache=cache)
    assert second.plan.executed == []
    assert sorted(second.plan.cached) == ["1", "2", "3", "4", "5"]
    assert ui_value(second, "5") == 21
    assert calls["Add"] == 2


async def test_edit_reruns_only_dirty_nodes(registry: NodeRegistry, calls) -> None:
    cache = OutputCache()
    executor = Executor()
    await executor.run(diamond(), registry, cache=cache)
    edited = diamond()
    edited["1"].inputs["value"] = 5
    result = await executor.run(edited, registry, cache=cache)
    # Node 2 is untouched; 1 changed, so 3, 4 and 5 (downstream) recompute.
    assert sorted(result.plan.executed) == ["1", "3", "4", "5"]
    assert result.plan.cached == ["2"]
    assert ui_value(result, "5") == 5 + 10 + 10


async def test_cache_key_distinguishes_types_and_links(registry: NodeRegistry) -> None:
    cache = OutputCache()
    executor = Executor()
    await executor.run(diamond(), registry, cache=cache)
    rewired = diamond()
    rewired["4"].inputs["b"] = ["1", 0]  # same values elsewhere, different wiring
    result = await executor.run(rewired, registry, cache=cache)
    assert sorted(result.plan.executed) == ["4", "5"]
    assert ui_value(result, "5") == 12


async def test_cache_is_bounded_lru() -> None:
    from midrun.engine.cache import CacheEntry

    cache = OutputCache(max_entries=2)
    for key in "abc":
        cache.put(key, CacheEntry((key,)))
    assert "a" not in cache and len(cache) == 2
    cache.get("b")
    cache.put("d", CacheEntry(("d",)))
    assert "b" in cache and "c" not in cache


def parallel_workflow(kind: str, n: int = 4, seconds: float = 0.3) -> Workflow:
    doc = {"0": {"class_type": "Const", "inputs": {"value": 1}}}
    for i in range(1, n + 1):
        doc[str(i)] = {"class_type": kind, "inputs": {"value": ["0", 0], "seconds": seconds}}
        doc[f"o{i}"] = {"class_type": "Output", "inputs": {"value": [str(i), 0]}}
    return Workflow.from_api(doc)


def barrier_types(parties: int, timeout: float = 10.0) -> list[NodeType]:
    """Two node types that each wait until ``parties`` of their kind are running at once:
    a thread barrier for the sync one (the executor runs it in a thread), an asyncio
    barrier for the async one. Run one at a time, the first times out and raises."""
    threads = threading.Barrier(parties, timeout=timeout)
    tasks = asyncio.Barrier(parties)

    def barrier_sync(value: int) -> tuple[int]:
        threads.wait()  # BrokenBarrierError after ``timeout`` unless all overlap
        return (value,)

    async def barrier_async(value: int) -> tuple[int]:
        async with asyncio.timeout(timeout):
            await tasks.wait()
        return (value,)

    spec = ((InputSpec("value", INT),), (OutputSpec(INT),))
    return [NodeType("BarrierSync", *spec, barrier_sync),
            NodeType("BarrierAsync", *spec, barrier_async)]  # fmt: skip


@pytest.mark.parametrize("kind", ["BarrierSync", "BarrierAsync"])
async def test_independent_nodes_run_concurrently(registry: NodeRegistry, kind: str) -> None:
    """Four independent nodes are all running at the same moment: each waits on a barrier
    that only opens once all four have reached it (sequential runs would time out)."""
    for node_type in barrier_types(4):
        registry.register(node_type)
    doc = {"0": {"class_type": "Const", "inputs": {"value": 1}}}
    for i in range(1, 5):
        doc[str(i)] = {"class_type": kind, "inputs": {"value": ["0", 0]}}
        doc[f"o{i}"] = {"class_type": "Output", "inputs": {"value": [str(i), 0]}}
    result = await Executor(max_concurrency=4).run(Workflow.from_api(doc), registry)
    assert result.ok, result.error
    assert [ui_value(result, f"o{i}") for i in range(1, 5)] == [1, 1, 1, 1]


async def test_concurrency_limit_is_respected(registry: NodeRegistry) -> None:
    from tests.testnodes import ACTIVE

    result = await Executor(max_concurrency=2).run(
        parallel_workflow("SlowAsync", 5, 0.05), registry
    )
    assert result.ok and ACTIVE["peak"] == 2


async def test_sequential_by_default(registry: NodeRegistry) -> None:
    from tests.testnodes import ACTIVE

    result = await Executor().run(parallel_workflow("SlowAsync", 3, 0.02), registry)
    assert result.ok and ACTIVE["peak"] == 1


async def test_steppable_protocol_and_control_points(registry: NodeRegistry, calls) -> None:
    tracer = Tracer()
    result = await Executor(hooks=[tracer]).run(steps_workflow(steps=4, start=2), registry)
    assert ui_value(result, "3") == 2 * (1 + 2 + 3 + 4)
    assert ui_value(result, "4") == [1, 2, 3, 4]
    assert calls["CountSteps.start"] == 1 and calls["CountSteps.step"] == 4
    points = [(p.position, p.node_id, p.step) for p in tracer.points if p.node_id == "2"]
    assert points == [
        ("before", "2", None),
        ("step", "2", 1),
        ("step", "2", 2),
        ("step", "2", 3),
        ("step", "2", 4),
        ("after", "2", None),
    ]
    assert {p.total_steps for p in tracer.points if p.position == "step"} == {4}
    kinds = [e.kind for e in tracer.events]
    assert kinds[0] == "started" and kinds[-1] == "completed"
    assert set(kinds[1:-1]) == {"executed"}  # one per finished node


async def test_zero_step_steppable_finishes(registry: NodeRegistry) -> None:
    result = await Executor().run(steps_workflow(steps=0), registry)
    assert ui_value(result, "4") == []


async def test_results_identical_with_and_without_hooks(registry: NodeRegistry) -> None:
    bare = await Executor().run(steps_workflow(steps=30), registry)
    hooked = await Executor(hooks=[Tracer()]).run(steps_workflow(steps=30), registry)
    assert bare.plan.ui == hooked.plan.ui


@pytest.mark.parametrize("stop_step", [1, 5, 9, 10])
async def test_suspend_and_resume_in_process_is_identical(
    registry: NodeRegistry, calls, stop_step: int, tmp_path: Path
) -> None:
    reference = await Executor().run(steps_workflow(), registry)
    calls.clear()
    first = await Executor(hooks=[StopAt("2", step=stop_step)]).run(steps_workflow(), registry)
    assert first.status == RunStatus.SUSPENDED
    assert first.in_flight["2"][0] == stop_step
    assert calls["CountSteps.step"] == stop_step
    saved = first.state.save(tmp_path / "run")
    resumed = await Executor().resume(RunState.load(saved), registry)
    assert resumed.status == RunStatus.COMPLETED
    assert resumed.plan.ui == reference.plan.ui
    assert calls["CountSteps.start"] == 1  # resumed mid-node, not restarted
    assert calls["CountSteps.step"] == 10
    assert calls["Const"] == 1  # the resumed run reused the saved value


async def test_suspend_before_node_and_after_node(
    registry: NodeRegistry, calls, tmp_path: Path
) -> None:
    reference = await Executor().run(steps_workflow(), registry)
    for position in (Position.BEFORE, Position.AFTER):
        first = await Executor(hooks=[StopAt("2", position=position)]).run(
            steps_workflow(), registry
        )
        assert first.status == RunStatus.SUSPENDED
        state = RunState.load(first.state.save(tmp_path / f"state-{position}"))
        resumed = await Executor().resume(state, registry)
        assert resumed.plan.ui == reference.plan.ui


async def test_pause_requested_from_another_thread(registry: NodeRegistry) -> None:
    """A flag set by another thread takes effect at the next control point: the run is
    held at step 5 until the other thread has set the flag, so it must suspend at step 6."""

    class PauseFlag(Hook):
        def __init__(self) -> None:
            self.flag = threading.Event()
            self.at_step_5 = threading.Event()
            self.flag_set = threading.Event()
            self.seen_step = None

        async def on_point(self, point: ControlPoint) -> Directive | None:
            if self.flag.is_set():
                self.seen_step = point.step
                return Directive.suspend("user pause")
            if point.node_id == "2" and point.step == 5:
                self.at_step_5.set()
                assert self.flag_set.wait(10), "the other thread never set the flag"
            return None

    hook = PauseFlag()

    def other_thread() -> None:
        if hook.at_step_5.wait(10):
            hook.flag.set()
            hook.flag_set.set()

    workflow = Workflow.from_api(
        {
            "1": {"class_type": "Const", "inputs": {"value": 1}},
            "2": {"class_type": "CountSteps", "inputs": {"start": ["1", 0], "steps": 10000}},
            "3": {"class_type": "Slow", "inputs": {"value": ["2", 0], "seconds": 0.0}},
            "4": {"class_type": "Output", "inputs": {"value": ["3", 0]}},
        }
    )
    setter = threading.Thread(target=other_thread)
    setter.start()
    result = await Executor(hooks=[hook], max_concurrency=2).run(workflow, registry)
    setter.join(10)
    assert result.status == RunStatus.SUSPENDED and result.reason == "user pause"
    assert hook.seen_step == 6
    step, state = result.in_flight["2"]
    assert step == 6 and state["trace"] == [1, 2, 3, 4, 5, 6]
    finished = await Executor().resume(result.state, registry)
    assert finished.ok
    assert ui_value(finished, "4") == sum(range(1, 10001))


async def test_abort_keeps_partial_results(registry: NodeRegistry) -> None:
    result = await Executor(hooks=[StopAt("2", step=3, abort=True, reason="enough")]).run(
        steps_workflow(), registry
    )
    assert result.status == RunStatus.ABORTED and result.reason == "enough"
    step, state = result.in_flight["2"]
    assert step == 3 and state["trace"] == [1, 2, 3]
    assert result.plan.values["1"] == (3,)
    assert result.state is not None  # inspectable, like a pause


async def test_node_error_names_node_and_class(registry: NodeRegistry) -> None:
    workflow = Workflow.from_api(
        {
            "1": {"class_type": "Const", "inputs": {"value": 1}},
            "2": {"class_type": "Boom", "inputs": {"value": ["1", 0], "message": "kaput"}},
            "3": {"class_type": "Output", "inputs": {"value": ["2", 0]}},
        }
    )
    tracer = Tracer()
    result = await Executor(hooks=[tracer]).run(workflow, registry)
    assert result.status == RunStatus.FAILED
    assert isinstance(result.error, NodeExecutionError)
    assert result.error.node_id == "2" and result.error.class_type == "Boom"
    assert "kaput" in result.error.message
    assert ("error", "2") in [(p.position, p.node_id) for p in tracer.points]
    assert tracer.events[-1].kind == "failed"


async def test_hook_may_suspend_on_error_and_resume_later(registry: NodeRegistry) -> None:
    class SuspendOnError(Hook):
        async def on_point(self, point: ControlPoint) -> Directive | None:
            if point.position == Position.ERROR:
                return Directive.suspend(f"error in {point.node_id}: {point.error}")
            return None

    workflow = Workflow.from_api(
        {
            "1": {"class_type": "Const", "inputs": {"value": 1}},
            "2": {"class_type": "Boom", "inputs": {"value": ["1", 0], "message": "boom"}},
            "3": {"class_type": "Output", "inputs": {"value": ["2", 0]}},
        }
    )
    result = await Executor(hooks=[SuspendOnError()]).run(workflow, registry)
    assert result.status == RunStatus.SUSPENDED and "boom" in result.reason
    # The failing node is pending, not finished: fix it and the run continues from there.
    assert result.state.workflow_checkpoint().finished == ["1"]
    from midrun.graph.types import INT, STRING, InputSpec, NodeType, OutputSpec

    registry.register(
        NodeType(
            "Boom",
            (InputSpec("value", INT), InputSpec("message", STRING)),
            (OutputSpec(INT),),
            lambda value, message: (value + 1,),
        ),
        replace=True,
    )
    resumed = await Executor().resume(result.state, registry)
    assert resumed.ok and resumed.plan.ui["3"]["value"] == [2]
    assert resumed.plan.executed == ["1", "2", "3"]


async def test_invalid_workflow_is_refused_before_running(registry: NodeRegistry, calls) -> None:
    workflow = diamond()
    workflow["3"].inputs["a"] = ["404", 0]
    with pytest.raises(WorkflowInvalidError) as info:
        await Executor().run(workflow, registry)
    assert "3" in info.value.extra_info["node_errors"]
    assert calls["Const"] == 0


async def test_declared_node_without_implementation_is_refused(registry: NodeRegistry) -> None:
    workflow = Workflow.from_api(
        {
            "1": {"class_type": "Const", "inputs": {"value": 1}},
            "2": {"class_type": "Declared", "inputs": {"value": ["1", 0]}},
            "3": {"class_type": "Output", "inputs": {"value": ["2", 0]}},
        }
    )
    with pytest.raises(NodeNotImplementedError) as info:
        await Executor().run(workflow, registry)
    assert info.value.extra_info["class_types"] == ["Declared"]


async def test_unserialisable_values_are_recomputed_on_resume(
    registry: NodeRegistry, calls, tmp_path: Path
) -> None:
    """A finished node whose output cannot be saved (like a loaded model) re-runs."""
    from midrun.graph.types import INT, InputSpec, NodeType, OutputSpec

    class Model:
        def __init__(self, factor: int) -> None:
            self.factor = factor

    def load(factor: int) -> tuple[Model]:
        calls["Load"] += 1
        return (Model(factor),)

    def apply(model: Model, total: int) -> tuple[int]:
        return (model.factor * total,)

    registry.register(NodeType("Load", (InputSpec("factor", INT),), (OutputSpec("MODEL"),), load))
    registry.register(
        NodeType(
            "Apply",
            (InputSpec("model", "MODEL"), InputSpec("total", INT)),
            (OutputSpec(INT),),
            apply,
        )
    )
    workflow = Workflow.from_api(
        {
            "0": {"class_type": "Load", "inputs": {"factor": 7}},
            "1": {"class_type": "Const", "inputs": {"value": 2}},
            "2": {"class_type": "CountSteps", "inputs": {"start": ["1", 0], "steps": 6}},
            "3": {"class_type": "Apply", "inputs": {"model": ["0", 0], "total": ["2", 0]}},
            "4": {"class_type": "Output", "inputs": {"value": ["3", 0]}},
        }
    )
    first = await Executor(hooks=[StopAt("2", step=2)]).run(workflow, registry)
    assert first.state.workflow_checkpoint().values["0"] is None
    state = RunState.load(first.state.save(tmp_path / "s"))
    resumed = await Executor().resume(state, registry)
    assert resumed.plan.ui["4"]["value"] == [7 * 2 * (1 + 2 + 3 + 4 + 5 + 6)]
    assert calls["Load"] == 2


async def test_corrupt_or_foreign_run_state_is_refused(
    registry: NodeRegistry, tmp_path: Path
) -> None:
    with pytest.raises(RunStateError):
        RunState.load(tmp_path / "nothing")
    first = await Executor(hooks=[StopAt("2", step=1)]).run(steps_workflow(), registry)
    saved = first.state.save(tmp_path / "s")
    (saved / "run.json").write_text("{not json")
    with pytest.raises(RunStateError, match="corrupt"):
        RunState.load(saved)
    first.state.workflow_checkpoint().workflow["2"]["class_type"] = "Vanished"
    with pytest.raises(RunStateError, match="Vanished"):
        await Executor().resume(first.state, registry)


RESUME_SCRIPT = """
import asyncio, json, sys
from midrun.engine.executor import Executor
from midrun.engine.runstate import RunState
from tests.testnodes import registry, CALLS
result = asyncio.run(Executor().resume(RunState.load(sys.argv[1]), registry()))
print(json.dumps({"status": result.status.value, "ui": result.plan.ui, "calls": dict(CALLS)}))
"""


async def test_saved_run_state_continues_in_a_new_process(
    registry: NodeRegistry, tmp_path: Path
) -> None:
    reference = await Executor().run(steps_workflow(steps=25), registry)
    first = await Executor(hooks=[StopAt("2", step=11)]).run(steps_workflow(steps=25), registry)
    saved = first.state.save(tmp_path / "paused")
    out = subprocess.run(
        [sys.executable, "-c", RESUME_SCRIPT, str(saved)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    report = json.loads(out.stdout)
    assert report["status"] == "completed"
    assert report["ui"] == json.loads(json.dumps(reference.plan.ui))
    assert report["calls"] == {"CountSteps.step": 14, "CountSteps.finish": 1, "Output": 2}


async def test_run_state_save_is_atomic_over_previous(
    registry: NodeRegistry, tmp_path: Path
) -> None:
    a = await Executor(hooks=[StopAt("2", step=2)]).run(steps_workflow(), registry)
    b = await Executor(hooks=[StopAt("2", step=7)]).run(steps_workflow(), registry)
    target = tmp_path / "state"
    a.state.save(target)
    b.state.save(target)
    assert RunState.load(target).steps() == {"2": 7}
    assert [p.name for p in tmp_path.iterdir()] == ["state"]


async def test_a_failing_hook_fails_the_run_cleanly(registry: NodeRegistry) -> None:
    class Broken(Hook):
        async def on_point(self, point: ControlPoint) -> Directive | None:
            if point.node_id == "2" and point.position == Position.STEP:
                raise KeyError("oops")
            return None

    result = await Executor(hooks=[Broken()]).run(steps_workflow(), registry)
    assert result.status == RunStatus.FAILED
    assert result.error.type == "hook_error" and "node 2" in result.error.message
