"""The debugger on real runs: StateGraphs and ComfyUI-format workflows."""

from __future__ import annotations

import asyncio
import threading

import pytest

from midrun.debug import (
    BreakpointError,
    BreakpointPosition,
    BreakpointType,
    DebugSession,
    DebugSessionConfig,
    PauseReason,
)
from midrun.debug.controller import NotPausedError
from midrun.debug.expressions import ExpressionError
from midrun.debug.session import RunFinished
from midrun.engine.executor import Executor, RunStatus
from midrun.graph.registry import NodeRegistry
from midrun.graph.stategraph import END, StateGraph
from midrun.graph.workflow import Workflow


def loop_graph():
    """tick (n += 1) loops until n == limit, then report; tick raises when n hits boom."""

    def tick(state):
        if state.get("boom") == state["n"]:
            raise ValueError(f"boom at {state['n']}")
        return {"n": state["n"] + 1, "seen": [*state["seen"], state["n"]]}

    graph = StateGraph()
    graph.add_node("tick", tick)
    graph.add_node("report", lambda s: {"report": f"n={s['n']}"})
    graph.add_conditional_edges("tick", lambda s: "tick" if s["n"] < s["limit"] else "report")
    graph.add_edge("report", END)
    graph.set_entry_point("tick")
    return graph.compile()


def start(compiled, session, state):
    return asyncio.create_task(compiled.invoke(state, debug_hook=session.create_hook()))


def new_session(compiled, **config) -> DebugSession:
    return DebugSession(
        DebugSessionConfig(session_id="s", workflow_id="wf", **config), graph=compiled
    )


async def finish(session: DebugSession, task):
    """Continue through any remaining pauses until the run ends."""
    while not task.done():
        try:
            await session.wait_for_pause()
        except RunFinished:
            break
        await session.continue_execution()
    return await task


async def test_node_breakpoint_before_and_after() -> None:
    compiled = loop_graph()
    session = new_session(compiled)
    before = session.set_breakpoint(node_id="report", position=BreakpointPosition.BEFORE)
    after = session.set_breakpoint(node_id="report", position="after")
    task = start(compiled, session, {"n": 0, "limit": 2, "seen": []})
    context = await session.wait_for_pause()
    assert (context.node_id, context.position, context.breakpoint_ids) == (
        "report",
        "before",
        [before.id],
    )
    assert context.reason == PauseReason.BREAKPOINT
    assert context.state == {"n": 2, "limit": 2, "seen": [0, 1]}
    assert session.get_current_state()["n"] == 2
    await session.continue_execution()
    context = await session.wait_for_pause()
    assert context.breakpoint_ids == [after.id] and context.state["report"] == "n=2"
    result = await finish(session, task)
    assert result.success and before.hit_count == 1 and after.hit_count == 1


async def test_conditional_breakpoint_text_and_callable() -> None:
    compiled = loop_graph()
    session = new_session(compiled)
    session.set_breakpoint(node_id="tick", condition="n == 3 and len(seen) == 3")
    task = start(compiled, session, {"n": 0, "limit": 6, "seen": []})
    assert (await session.wait_for_pause()).state["n"] == 3
    session.clear_breakpoints()
    session.set_breakpoint(node_id="tick", condition=lambda names: names["state"]["n"] == 5)
    await session.continue_execution()
    assert (await session.wait_for_pause()).state["n"] == 5
    assert (await finish(session, task)).state["n"] == 6


async def test_hit_and_ignore_counts() -> None:
    compiled = loop_graph()
    session = new_session(compiled)
    bp = session.set_breakpoint(node_id="tick", ignore_count=2, hit_condition="% 2 == 0")
    task = start(compiled, session, {"n": 0, "limit": 8, "seen": []})
    seen = []
    while True:
        try:
            context = await session.wait_for_pause()
        except RunFinished:
            break
        seen.append(context.state["n"])
        await session.continue_execution()
    await task
    # hits 1, 2 ignored; of the rest, even hit numbers (4, 6, 8) pause: n = 3, 5, 7
    assert seen == [3, 5, 7] and bp.hit_count == 8


async def test_exception_breakpoint_pauses_with_the_error() -> None:
    compiled = loop_graph()
    session = new_session(compiled)
    bp = session.set_breakpoint(bp_type=BreakpointType.EXCEPTION, exception_types=["ValueError"])
    task = start(compiled, session, {"n": 0, "limit": 5, "boom": 2, "seen": []})
    context = await session.wait_for_pause()
    assert context.reason == PauseReason.BREAKPOINT and context.breakpoint_ids == [bp.id]
    assert context.position == BreakpointPosition.ON_ERROR and context.node_id == "tick"
    assert context.error == "ValueError: boom at 2" and context.error_type == "ValueError"
    await session.continue_execution()
    result = await task
    assert not result.success and "boom at 2" in result.error.message


async def test_exception_filter_and_node_on_error_position() -> None:
    compiled = loop_graph()
    session = new_session(compiled)
    session.set_breakpoint(bp_type="exception", exception_types=["KeyError"])
    result = await compiled.invoke(
        {"n": 0, "limit": 5, "boom": 1, "seen": []}, debug_hook=session.create_hook()
    )
    assert not result.success  # a ValueError does not match a KeyError filter
    session.clear_breakpoints()
    bp = session.set_breakpoint(node_id="tick", position=BreakpointPosition.ON_ERROR)
    task = start(compiled, session, {"n": 0, "limit": 5, "boom": 1, "seen": []})
    context = await session.wait_for_pause()
    assert context.breakpoint_ids == [bp.id] and context.error_type == "ValueError"
    await session.stop()
    assert (await task).status == RunStatus.ABORTED


async def test_state_watch_on_change_and_on_value() -> None:
    compiled = loop_graph()
    session = new_session(compiled)
    change = session.set_breakpoint(bp_type="state", state_key="report", position="after")
    value = session.set_breakpoint(state_key="n", state_value=4, position="after")
    task = start(compiled, session, {"n": 0, "limit": 6, "seen": [], "report": "none"})
    context = await session.wait_for_pause()
    assert context.breakpoint_ids == [value.id] and context.state["n"] == 4
    await session.continue_execution()
    context = await session.wait_for_pause()
    assert context.breakpoint_ids == [change.id] and context.state["report"] == "n=6"
    await finish(session, task)


async def test_logpoints_emit_output_and_do_not_pause() -> None:
    compiled = loop_graph()
    session = new_session(compiled)
    events: list[tuple[str, dict]] = []
    session.controller.listeners.append(lambda kind, data: events.append((kind, data)))
    session.set_breakpoint(node_id="tick", position="after", log_message="n is now {n}")
    result = await compiled.invoke(
        {"n": 0, "limit": 3, "seen": []}, debug_hook=session.create_hook()
    )
    assert result.success
    assert [d["message"] for k, d in events if k == "output"] == [
        "n is now 1",
        "n is now 2",
        "n is now 3",
    ]
    assert not any(k == "paused" for k, _ in events)
    assert events[-1] == ("completed", {"run_id": result.run_id, "status": "completed"})


async def test_stategraph_stepped_from_start_to_end() -> None:
    compiled = loop_graph()
    session = new_session(compiled)
    session.set_breakpoint(node_id="tick", position="before", hit_condition="1")
    task = start(compiled, session, {"n": 0, "limit": 3, "seen": []})
    visited = []
    context = await session.wait_for_pause()
    while True:
        visited.append((context.node_id, context.state["n"]))
        await session.step_over()
        try:
            context = await session.wait_for_pause()
        except RunFinished:
            break
    result = await task
    assert visited == [("tick", 0), ("tick", 1), ("tick", 2), ("report", 3)]
    assert result.success and result.node_history == ["tick", "tick", "tick", "report"]


async def test_pause_requested_from_another_thread() -> None:
    """Pause and stop requested by other threads take effect at the run's next control
    point; held, the run does not move. The node itself waits (at n == 5 and n == 8)
    until the other thread has made its request, so where the run stops is exact."""
    at_5, paused_asked = threading.Event(), threading.Event()
    at_8, stop_asked = threading.Event(), threading.Event()
    held, resumed = threading.Event(), threading.Event()
    ticks_while_held: list[int] = []

    def tick(state):
        n = state["n"]
        if held.is_set() and not resumed.is_set():
            ticks_while_held.append(n)
        if n == 5:
            at_5.set()
            assert paused_asked.wait(10), "the pause request never came"
        if n == 8:
            at_8.set()
            assert stop_asked.wait(10), "the stop request never came"
        return {"n": n + 1}

    graph = StateGraph()
    graph.add_node("tick", tick)
    graph.add_conditional_edges("tick", lambda s: "tick" if s["n"] < 10_000 else END)
    graph.set_entry_point("tick")
    compiled = graph.compile(recursion_limit=20_000)
    session = new_session(compiled)
    controller = session.controller
    # Set on the run's thread as the controller holds it, before it waits for a command.
    controller.listeners.append(lambda event, _: held.set() if event == "paused" else None)

    def request(reached: threading.Event, call, done: threading.Event) -> threading.Thread:
        def run() -> None:
            if reached.wait(10):
                call()
                done.set()

        thread = threading.Thread(target=run)
        thread.start()
        return thread

    pauser = request(at_5, controller.request_pause, paused_asked)
    stopper = request(at_8, controller.request_stop, stop_asked)
    task = start(compiled, session, {"n": 0})
    context = await session.wait_for_pause()
    pauser.join(10)
    # Held at the first point after the tick that saw n == 5: tick's after point, n == 6.
    assert context.reason == PauseReason.PAUSE_REQUEST
    assert (context.node_id, context.state["n"]) == ("tick", 6)

    def resume_from_another_thread() -> None:
        # The test's coroutine is parked on this thread: the event loop is free to run
        # the run task, which would tick now if the hold did not hold.
        assert session.is_paused and session.get_current_state()["n"] == 6
        resumed.set()
        controller.resume()

    await asyncio.to_thread(resume_from_another_thread)
    assert ticks_while_held == []
    result = await task
    stopper.join(10)
    assert result.status == RunStatus.ABORTED and result.state["n"] == 9


async def test_commands_on_a_running_or_finished_run_are_refused() -> None:
    compiled = loop_graph()
    session = new_session(compiled)
    with pytest.raises(NotPausedError):
        await session.continue_execution()
    await compiled.invoke({"n": 0, "limit": 1, "seen": []}, debug_hook=session.create_hook())
    with pytest.raises(RunFinished):
        await session.wait_for_pause(timeout=0.5)


def test_malformed_conditions_and_unknown_nodes_are_refused_when_set() -> None:
    session = new_session(loop_graph())
    with pytest.raises(ExpressionError):
        session.set_breakpoint(node_id="tick", condition="n >")
    with pytest.raises(ExpressionError, match="not allowed"):
        session.set_breakpoint(node_id="tick", condition="n.__class__")
    with pytest.raises(BreakpointError, match="No node 'tock'"):
        session.set_breakpoint(node_id="tock")
    assert session.list_breakpoints() == []


async def test_disabled_breakpoints_do_not_fire_and_suspend_checkpoints() -> None:
    compiled = loop_graph()
    session = new_session(compiled)
    bp = session.set_breakpoint(node_id="tick")
    session.disable_breakpoint(bp.id)
    assert (
        await compiled.invoke({"n": 0, "limit": 2, "seen": []}, debug_hook=session.create_hook())
    ).success
    session.enable_breakpoint(bp.id)
    task = start(compiled, session, {"n": 0, "limit": 4, "seen": []})
    await session.wait_for_pause()
    await session.continue_execution()
    await session.wait_for_pause()
    await session.suspend()
    result = await task
    assert result.status == RunStatus.SUSPENDED and result.run_state is not None
    resumed = await compiled.resume(result.run_state)
    assert resumed.success and resumed.state["report"] == "n=4"


async def test_snapshots_and_diffs_of_a_run() -> None:
    compiled = loop_graph()
    session = new_session(compiled)
    await compiled.invoke({"n": 0, "limit": 2, "seen": []}, debug_hook=session.create_hook())
    snapshots = session.snapshots()
    assert [(s.node_id, s.position) for s in snapshots] == [
        ("tick", "before"),
        ("tick", "after"),
        ("tick", "before"),
        ("tick", "after"),
        ("report", "before"),
        ("report", "after"),
    ]
    diff = session.diff(snapshots[0].id, snapshots[-1].id)
    assert diff.changed == {"n": (0, 2), "seen": ([], [0, 1])}
    assert set(diff.added) == {"report"}


# -- the same debugger on a ComfyUI-format workflow (torch-free test nodes) -------------


def steps_workflow(steps: int = 6) -> Workflow:
    return Workflow.from_api(
        {
            "1": {"class_type": "Const", "inputs": {"value": 2}},
            "2": {"class_type": "CountSteps", "inputs": {"start": ["1", 0], "steps": steps}},
            "3": {"class_type": "Add", "inputs": {"a": ["2", 0], "b": ["1", 0]}},
            "4": {"class_type": "Output", "inputs": {"value": ["3", 0]}},
        }
    )


def run_workflow(session: DebugSession, registry: NodeRegistry, workflow=None):
    workflow = workflow or steps_workflow()
    return asyncio.create_task(Executor(hooks=[session.create_hook()]).run(workflow, registry))


async def test_workflow_step_breakpoints_at_and_every(registry: NodeRegistry) -> None:
    session = DebugSession(graph=steps_workflow())
    at = session.set_breakpoint(node_id="2", position="step", step=4)
    every = session.set_breakpoint(node_id="2", position="step", every=3)
    task = run_workflow(session, registry)
    hits = []
    while True:
        try:
            context = await session.wait_for_pause()
        except RunFinished:
            break
        hits.append((context.step, context.breakpoint_ids, context.state["step_state"]["total"]))
        await session.continue_execution()
    assert (await task).ok
    assert hits == [(3, [every.id], 2 * 6), (4, [at.id], 2 * 10), (6, [every.id], 2 * 21)]


async def test_workflow_conditions_over_inputs_and_outputs(registry: NodeRegistry) -> None:
    session = DebugSession(graph=steps_workflow())
    bp = session.set_breakpoint(
        node_id="3", position="after", condition="a > 40 and outputs[0] == a + b"
    )
    task = run_workflow(session, registry)
    context = await session.wait_for_pause()
    assert context.breakpoint_ids == [bp.id]
    assert context.state["inputs"] == {"a": 42, "b": 2} and context.state["outputs"] == [44]
    await session.continue_execution()
    assert (await task).plan.ui["4"]["value"] == [44]


async def test_workflow_step_into_and_out_of_a_steppable_node(registry: NodeRegistry) -> None:
    session = DebugSession(graph=steps_workflow())
    session.set_breakpoint(node_id="2", position="before")
    task = run_workflow(session, registry)
    context = await session.wait_for_pause()
    assert (context.node_id, context.position) == ("2", "before")
    await session.step_into()
    context = await session.wait_for_pause()
    assert (context.position, context.step, context.total_steps) == ("step", 1, 6)
    await session.step_into()
    assert (await session.wait_for_pause()).step == 2
    await session.step_out()
    context = await session.wait_for_pause()
    assert (context.node_id, context.position) == ("2", "after")
    assert context.state["outputs"][0] == 42
    await session.step_over()
    context = await session.wait_for_pause()
    assert (context.node_id, context.position) == ("3", "before")
    await session.continue_execution()
    assert (await task).ok


async def test_workflow_run_to_node_and_step_over_each_node(registry: NodeRegistry) -> None:
    session = DebugSession(graph=steps_workflow())
    session.set_breakpoint(node_id="1", position="before")
    task = run_workflow(session, registry)
    assert (await session.wait_for_pause()).node_id == "1"
    await session.run_to("3")
    context = await session.wait_for_pause()
    assert (context.node_id, context.reason) == ("3", PauseReason.RUN_TO)
    await session.run_to("4", "after")
    context = await session.wait_for_pause()
    assert (context.node_id, context.position) == ("4", "after")
    await session.continue_execution()
    assert (await task).ok
    with pytest.raises(BreakpointError):
        await session.run_to("nope")


async def test_workflow_exception_pauses_and_stop_aborts(registry: NodeRegistry) -> None:
    workflow = Workflow.from_api(
        {
            "1": {"class_type": "Const", "inputs": {"value": 2}},
            "2": {"class_type": "Boom", "inputs": {"value": ["1", 0], "message": "bad input"}},
            "3": {"class_type": "Output", "inputs": {"value": ["2", 0]}},
        }
    )
    session = DebugSession(graph=workflow)
    session.set_breakpoint(bp_type="exception")
    task = run_workflow(session, registry, workflow)
    context = await session.wait_for_pause()
    assert (context.node_id, context.error) == ("2", "RuntimeError: bad input")
    await session.stop()
    result = await task
    assert result.status == RunStatus.ABORTED and result.plan.values["1"] == (2,)


async def test_breakpoint_scopes_workflow_and_run(registry: NodeRegistry) -> None:
    session = DebugSession(DebugSessionConfig(workflow_id="wf-1"), graph=steps_workflow())
    session.set_breakpoint(node_id="3", run_id="some-other-run")
    other = DebugSession(DebugSessionConfig(workflow_id="wf-2"))
    bp = other.set_breakpoint(node_id="3")
    session.breakpoints.add(bp)  # belongs to wf-2: not for this session's workflow
    result = await Executor(hooks=[session.create_hook()]).run(steps_workflow(), registry)
    assert result.ok and not session.controller.last_context
    mine = session.set_breakpoint(node_id="3", run_id="run-7")
    task = asyncio.create_task(
        Executor(hooks=[session.create_hook()]).run(steps_workflow(), registry, run_id="run-7")
    )
    assert (await session.wait_for_pause()).breakpoint_ids == [mine.id]
    await session.continue_execution()
    assert (await task).ok


async def test_step_out_of_a_subgraph(registry: NodeRegistry) -> None:
    """Flattened subgraph nodes ("12:5") are stepped into one by one and stepped out of."""
    workflow = Workflow.from_api(
        {
            "1": {"class_type": "Const", "inputs": {"value": 1}},
            "12:5": {"class_type": "Add", "inputs": {"a": ["1", 0], "b": ["1", 0]}},
            "12:6": {"class_type": "Add", "inputs": {"a": ["12:5", 0], "b": ["1", 0]}},
            "4": {"class_type": "Output", "inputs": {"value": ["12:6", 0]}},
        }
    )
    session = DebugSession(graph=workflow)
    session.set_breakpoint(node_id="12:5", position="after")
    task = run_workflow(session, registry, workflow)
    assert (await session.wait_for_pause()).node_id == "12:5"
    await session.step_out()
    context = await session.wait_for_pause()
    assert (context.node_id, context.position) == ("4", "before")
    await session.continue_execution()
    assert (await task).plan.ui["4"]["value"] == [3]
