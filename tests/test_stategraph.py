"""StateGraph: conditional edges, loops, async nodes, fan-out, errors, limits, suspend."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest

from midrun.core.errors import NodeExecutionError, RecursionLimitError
from midrun.debug.trace import StopAt, Tracer
from midrun.engine.control import Position
from midrun.engine.executor import RunStatus
from midrun.engine.runstate import RunState
from midrun.graph.stategraph import END, GraphDefinitionError, StateGraph

ROOT = Path(__file__).resolve().parent.parent


def counter_graph() -> StateGraph:
    """increment until n >= limit, then finish: a loop through a conditional edge."""
    graph = StateGraph()
    graph.add_node("increment", lambda s: {"n": s["n"] + 1, "log": [*s["log"], s["n"]]})
    graph.add_node("finish", lambda s: {"done": True})
    graph.add_conditional_edges(
        "increment",
        lambda s: "more" if s["n"] < s["limit"] else "enough",
        {"more": "increment", "enough": "finish"},
    )
    graph.add_edge("finish", END)
    graph.set_entry_point("increment")
    return graph


async def test_loop_with_conditional_edge() -> None:
    result = await counter_graph().compile().invoke({"n": 0, "limit": 4, "log": []})
    assert result.success and result.status == RunStatus.COMPLETED
    assert result.state == {"n": 4, "limit": 4, "log": [0, 1, 2, 3], "done": True}
    assert result.node_history == ["increment"] * 4 + ["finish"]
    assert result.iterations == 5
    assert result.duration > 0


async def test_router_without_mapping_names_nodes_directly() -> None:
    graph = StateGraph()
    graph.add_node("classify", lambda s: {"kind": "even" if s["x"] % 2 == 0 else "odd"})
    graph.add_node("even", lambda s: {"out": s["x"] // 2})
    graph.add_node("odd", lambda s: {"out": 3 * s["x"] + 1})
    graph.add_conditional_edges("classify", lambda s: s["kind"])
    graph.set_entry_point("classify")
    compiled = graph.compile()
    assert (await compiled.invoke({"x": 6})).state["out"] == 3
    odd = await compiled.invoke({"x": 7})
    assert odd.state["out"] == 22 and odd.node_history == ["classify", "odd"]


async def test_async_nodes_and_async_router() -> None:
    async def fetch(state):
        await asyncio.sleep(0.01)
        return {"items": [*state["items"], len(state["items"])]}

    async def route(state):
        await asyncio.sleep(0)
        return END if len(state["items"]) >= 3 else "fetch"

    graph = StateGraph()
    graph.add_node("fetch", fetch)
    graph.add_conditional_edges("fetch", route, ["fetch", END])
    graph.set_entry_point("fetch")
    result = await graph.compile().invoke({"items": []})
    assert result.state["items"] == [0, 1, 2]


async def test_fan_out_runs_a_superstep_and_merges_in_order() -> None:
    graph = StateGraph()
    graph.add_node("split", lambda s: {"parts": []})
    graph.add_node("left", lambda s: {"left": s["x"] - 1})
    graph.add_node("right", lambda s: {"right": s["x"] + 1})
    graph.add_node("join", lambda s: {"sum": s["left"] + s["right"]})
    graph.add_edge("split", "left")
    graph.add_edge("split", "right")
    graph.add_edge("left", "join")
    graph.add_edge("right", "join")
    graph.set_entry_point("split")
    result = await graph.compile().invoke({"x": 10}, max_concurrency=2)
    assert result.state["sum"] == 20
    assert result.node_history == ["split", "left", "right", "join"]
    assert result.iterations == 3  # join runs once, after both branches


async def test_node_error_carries_node_name() -> None:
    def explode(state):
        raise KeyError("missing thing")

    graph = StateGraph()
    graph.add_node("fine", lambda s: {"a": 1})
    graph.add_node("explode", explode)
    graph.add_edge("fine", "explode")
    graph.set_entry_point("fine")
    result = await graph.compile().invoke({})
    assert not result.success and result.status == RunStatus.FAILED
    assert isinstance(result.error, NodeExecutionError)
    assert result.error.node_id == "explode"
    assert "missing thing" in result.error.message
    assert result.node_history == ["fine"] and result.state == {"a": 1}


async def test_bad_update_type_and_bad_route_are_errors() -> None:
    graph = StateGraph()
    graph.add_node("a", lambda s: 42)
    graph.set_entry_point("a")
    result = await graph.compile().invoke({})
    assert not result.success and "dict update" in result.error.message

    graph = StateGraph()
    graph.add_node("a", lambda s: {})
    graph.add_conditional_edges("a", lambda s: "nowhere", {"somewhere": END})
    graph.set_entry_point("a")
    result = await graph.compile().invoke({})
    assert not result.success and "nowhere" in result.error.message


async def test_recursion_limit_stops_endless_loops() -> None:
    graph = StateGraph()
    graph.add_node("spin", lambda s: {"n": s.get("n", 0) + 1})
    graph.add_edge("spin", "spin")
    graph.set_entry_point("spin")
    result = await graph.compile(recursion_limit=7).invoke({})
    assert not result.success and isinstance(result.error, RecursionLimitError)
    assert result.state["n"] == 7 and result.iterations == 7
    more = await graph.compile().invoke({}, recursion_limit=3)
    assert more.state["n"] == 3


def test_definition_errors_are_specific() -> None:
    graph = StateGraph()
    graph.add_node("a", lambda s: {})
    with pytest.raises(GraphDefinitionError, match="entry point"):
        graph.compile()
    graph.set_entry_point("a")
    graph.add_edge("a", "ghost")
    with pytest.raises(GraphDefinitionError, match="ghost"):
        graph.compile()
    with pytest.raises(GraphDefinitionError, match="already"):
        graph.add_node("a", lambda s: {})
    with pytest.raises(GraphDefinitionError, match="reserved"):
        graph.add_node(END, lambda s: {})


async def test_control_points_see_state_and_update() -> None:
    tracer = Tracer()

    class Watch(Tracer):
        async def on_point(self, point):
            if point.position == Position.AFTER:
                seen.append((point.node_id, dict(point.inputs), point.outputs[0]))
            return await super().on_point(point)

    seen: list = []
    await (
        counter_graph()
        .compile()
        .invoke({"n": 0, "limit": 2, "log": []}, debug_hook=Watch(), hooks=[tracer])
    )
    assert seen[0] == ("increment", {"n": 0, "limit": 2, "log": []}, {"n": 1, "log": [0]})
    assert [p.position for p in tracer.points[:2]] == ["before", "after"]


async def test_suspend_and_resume_a_graph(tmp_path: Path) -> None:
    graph = counter_graph().compile()

    # Stop before the first increment that sees n == 2: skip hits until then.
    class StopWhen(StopAt):
        async def on_point(self, point):
            if point.inputs.get("n") != 2:
                return None
            return await StopAt.on_point(self, point)

    stop = StopWhen("increment", position=Position.BEFORE)
    first = await graph.invoke({"n": 0, "limit": 5, "log": []}, hooks=[stop])
    assert first.status == RunStatus.SUSPENDED and first.state["n"] == 2
    saved = first.run_state.save(tmp_path / "g")
    resumed = await graph.resume(RunState.load(saved))
    straight = await graph.invoke({"n": 0, "limit": 5, "log": []})
    assert resumed.success and resumed.state == straight.state
    assert resumed.node_history == straight.node_history


GRAPH_RESUME = """
import asyncio, json, sys
from midrun.engine.runstate import RunState
from tests.test_stategraph import counter_graph
r = asyncio.run(counter_graph().compile().resume(RunState.load(sys.argv[1])))
print(json.dumps({"state": r.state, "history": r.node_history, "ok": r.success}))
"""


async def test_graph_run_state_continues_in_a_new_process(tmp_path: Path) -> None:
    stop = StopAt("finish", position=Position.BEFORE)
    first = await counter_graph().compile().invoke({"n": 0, "limit": 3, "log": []}, hooks=[stop])
    saved = first.run_state.save(tmp_path / "g")
    out = subprocess.run(
        [sys.executable, "-c", GRAPH_RESUME, str(saved)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    report = json.loads(out.stdout)
    assert report == {
        "state": {"n": 3, "limit": 3, "log": [0, 1, 2], "done": True},
        "history": ["increment"] * 3 + ["finish"],
        "ok": True,
    }


async def test_steppable_node_inside_a_graph() -> None:
    class Countdown:
        def start(self, state):
            return {"left": state["from"], "seen": []}

        def step(self, st):
            return {"left": st["left"] - 1, "seen": [*st["seen"], st["left"]]}

        def done(self, st):
            return st["left"] <= 0

        def finish(self, st):
            return {"seen": st["seen"]}

    tracer = Tracer()
    graph = StateGraph()
    graph.add_node("count", Countdown())
    graph.set_entry_point("count")
    result = await graph.compile().invoke({"from": 3}, hooks=[tracer])
    assert result.state["seen"] == [3, 2, 1]
    assert [p.step for p in tracer.points if p.position == "step"] == [1, 2, 3]
