"""The JSON debug protocol: commands get responses, events stream out."""

from __future__ import annotations

import asyncio
import json

from midrun.debug.protocol import COMMANDS, EVENTS, DebugProtocol
from midrun.debug.session import DebugSession, DebugSessionConfig
from midrun.graph.stategraph import END, StateGraph


def graph():
    g = StateGraph()
    g.add_node(
        "grow",
        lambda s: {"items": [*s["items"], len(s["items"])], "meta": {"count": len(s["items"]) + 1}},
    )
    g.add_conditional_edges("grow", lambda s: "grow" if len(s["items"]) < 3 else END)
    g.set_entry_point("grow")
    return g.compile()


def command(kind: str, data: dict | None = None, request_id: str = "r1") -> dict:
    return {
        "type": kind,
        "session_id": "dbg",
        "data": data or {},
        "timestamp": 1.0,
        "request_id": request_id,
    }


async def test_a_debugging_conversation() -> None:
    compiled = graph()
    session = DebugSession(DebugSessionConfig(session_id="dbg"), graph=compiled)
    sent: list[dict] = []
    protocol = DebugProtocol(session, sent.append)

    response = await protocol.handle(
        command(
            "set_breakpoints",
            {
                "breakpoints": [
                    {"node_id": "grow", "position": "after", "condition": "meta.count == 2"},
                    {"node_id": "grow", "position": "after", "log_message": "items={items}"},
                ]
            },
            request_id="42",
        )
    )
    assert response["type"] == "response" and response["request_id"] == "42"
    assert response["data"]["success"] is True
    ids = [bp["id"] for bp in response["data"]["breakpoints"]]
    assert set(response) == {"type", "session_id", "data", "timestamp", "request_id"}

    task = asyncio.create_task(compiled.invoke({"items": []}, debug_hook=session.create_hook()))
    await session.wait_for_pause()
    kinds = [m["type"] for m in sent]
    assert kinds[:2] == ["state_update", "output"] and "breakpoint_hit" in kinds
    paused = next(m for m in sent if m["type"] == "paused")
    assert paused["data"]["breakpoint_ids"] == [ids[0]]
    assert paused["data"]["state"]["items"]["preview"] == "[0, 1]"
    json.dumps(sent)  # every event is JSON

    state = await protocol.handle(command("inspect_state"))
    assert state["data"]["paused"] is True and state["data"]["state"]["meta"]["type"] == "dict"
    value = await protocol.handle(command("inspect_state", {"path": "meta.count", "full": True}))
    assert value["data"]["value"] == 2
    missing = await protocol.handle(command("inspect_state", {"path": "nope.x"}))
    assert missing["data"]["success"] is False
    assert missing["data"]["error"]["type"] == "invalid_debug_message"

    diff = await protocol.handle(command("get_diff"))
    assert "meta.count" in diff["data"]["diff"]["changed"] or diff["data"]["diff"]["added"]
    listed = await protocol.handle(command("list_snapshots"))
    assert len(listed["data"]["snapshots"]) >= 2

    assert (await protocol.handle(command("continue")))["data"]["success"]
    result = await task
    assert result.success and result.state["items"] == [0, 1, 2]
    assert sent[-1]["type"] == "completed" and sent[-1]["data"]["status"] == "completed"
    outputs = [m["data"]["message"] for m in sent if m["type"] == "output"]
    assert outputs == ["items=[0]", "items=[0, 1]", "items=[0, 1, 2]"]
    assert {m["type"] for m in sent} <= EVENTS

    cleared = await protocol.handle(command("clear_breakpoints", {"ids": [ids[1]]}))
    assert cleared["data"]["remaining"] == 1


async def test_bad_messages_get_specific_errors() -> None:
    session = DebugSession(DebugSessionConfig(session_id="dbg"), graph=graph())
    protocol = DebugProtocol(session)
    cases = [
        ("not a dict", "JSON object"),
        ({"type": "continue"}, "session_id"),
        (command("teleport"), "Unknown command"),
        ({**command("continue"), "session_id": "other"}, "Unknown session"),
        (command("continue"), "not paused"),
        (command("set_breakpoints", {"breakpoints": [{"node_id": "nowhere"}]}), "No node"),
        (
            command("set_breakpoints", {"breakpoints": [{"node_id": "grow", "condition": "("}]}),
            "not valid",
        ),
        (command("set_breakpoints", {}), "list"),
        (command("run_to"), "node_id"),
        (command("get_diff"), "two snapshots"),
    ]
    for message, fragment in cases:
        response = await protocol.handle(message)
        assert response["data"]["success"] is False, message
        assert fragment in response["data"]["error"]["message"], (message, response)
    # A refused batch sets nothing.
    await protocol.handle(
        command(
            "set_breakpoints",
            {"breakpoints": [{"node_id": "grow"}, {"node_id": "grow", "hit_condition": "often"}]},
        )
    )
    assert session.list_breakpoints() == []
    assert "set_breakpoints" in COMMANDS and "paused" in EVENTS
