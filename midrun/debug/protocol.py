"""The debug protocol: JSON messages between a debugger front end and a DebugSession.

Every message is ``{type, session_id, data, timestamp, request_id}``. Commands come in and
get a ``response`` (``success`` and ``data`` or ``error``); events go out as they happen.
docs/DEBUG_PROTOCOL.md maps each to the Debug Adapter Protocol.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from midrun.core.errors import MidrunError
from midrun.core.ids import new_id
from midrun.debug.breakpoints import Breakpoint
from midrun.debug.expressions import get_value
from midrun.debug.inspector import summarise
from midrun.debug.session import DebugSession

COMMANDS = frozenset(
    {
        "set_breakpoints",
        "clear_breakpoints",
        "list_breakpoints",
        "continue",
        "step_over",
        "step_into",
        "step_out",
        "run_to",
        "pause",
        "stop",
        "suspend",
        "inspect_state",
        "get_diff",
        "list_snapshots",
    }
)
EVENTS = frozenset(
    {
        "breakpoint_hit",
        "breakpoint",
        "state_update",
        "exception",
        "paused",
        "resumed",
        "completed",
        "output",
    }
)


class ProtocolError(MidrunError):
    type = "invalid_debug_message"


@dataclass(slots=True)
class Message:
    type: str
    session_id: str
    data: dict[str, Any] = field(default_factory=dict)
    timestamp: float = field(default_factory=time.time)
    request_id: str = field(default_factory=new_id)

    def to_json(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "session_id": self.session_id,
            "data": self.data,
            "timestamp": self.timestamp,
            "request_id": self.request_id,
        }

    @classmethod
    def from_json(cls, raw: Any) -> Message:
        if not isinstance(raw, Mapping):
            raise ProtocolError("A debug message is a JSON object")
        missing = [k for k in ("type", "session_id") if not isinstance(raw.get(k), str)]
        if missing:
            raise ProtocolError(f"Debug message lacks {', '.join(missing)}")
        data = raw.get("data") or {}
        if not isinstance(data, Mapping):
            raise ProtocolError("Debug message data must be an object")
        return cls(
            raw["type"],
            raw["session_id"],
            dict(data),
            float(raw.get("timestamp") or time.time()),
            str(raw.get("request_id") or new_id()),
        )


class DebugProtocol:
    """Serves one session: ``await handle(message)`` for commands; events go to ``send``."""

    def __init__(
        self, session: DebugSession, send: Callable[[dict[str, Any]], None] | None = None
    ) -> None:
        self.session = session
        self.send = send
        session.controller.listeners.append(self._event)

    def _event(self, event: str, data: dict[str, Any]) -> None:
        if self.send is not None:
            self.send(Message(event, self.session.session_id, data).to_json())

    async def handle(self, raw: Any) -> dict[str, Any]:
        request_id = raw.get("request_id") if isinstance(raw, Mapping) else None
        try:
            message = Message.from_json(raw)
            if message.session_id != self.session.session_id:
                raise ProtocolError(f"Unknown session {message.session_id!r}")
            if message.type not in COMMANDS:
                raise ProtocolError(
                    f"Unknown command {message.type!r}; commands: {', '.join(sorted(COMMANDS))}"
                )
            data = await getattr(self, f"_cmd_{message.type}")(message.data)
            return self._response(request_id, True, data)
        except MidrunError as exc:
            return self._response(request_id, False, {"error": exc.to_dict()})

    def _response(self, request_id: Any, success: bool, data: dict[str, Any]) -> dict[str, Any]:
        message = Message("response", self.session.session_id, {"success": success, **data})
        if request_id is not None:
            message.request_id = str(request_id)
        return message.to_json()

    async def _cmd_set_breakpoints(self, data: dict[str, Any]) -> dict[str, Any]:
        items = data.get("breakpoints")
        if not isinstance(items, list):
            raise ProtocolError("set_breakpoints needs data.breakpoints: a list")
        created = [Breakpoint.from_json(item) for item in items]  # all checked before any set
        if data.get("replace"):
            self.session.clear_breakpoints()
        for bp in created:
            self.session.breakpoints.add(bp)
        return {"breakpoints": [bp.to_json() for bp in created]}

    async def _cmd_clear_breakpoints(self, data: dict[str, Any]) -> dict[str, Any]:
        ids = data.get("ids")
        if ids is None:
            self.session.clear_breakpoints()
        else:
            for bp_id in ids:
                self.session.clear_breakpoint(bp_id)
        return {"remaining": len(self.session.breakpoints)}

    async def _cmd_list_breakpoints(self, data: dict[str, Any]) -> dict[str, Any]:
        return {"breakpoints": self.session.breakpoints.to_json()}

    async def _cmd_continue(self, data: dict[str, Any]) -> dict[str, Any]:
        await self.session.continue_execution()
        return {}

    async def _cmd_step_over(self, data: dict[str, Any]) -> dict[str, Any]:
        await self.session.step_over()
        return {}

    async def _cmd_step_into(self, data: dict[str, Any]) -> dict[str, Any]:
        await self.session.step_into()
        return {}

    async def _cmd_step_out(self, data: dict[str, Any]) -> dict[str, Any]:
        await self.session.step_out()
        return {}

    async def _cmd_run_to(self, data: dict[str, Any]) -> dict[str, Any]:
        if not data.get("node_id"):
            raise ProtocolError("run_to needs data.node_id")
        await self.session.run_to(str(data["node_id"]), str(data.get("position", "before")))
        return {}

    async def _cmd_pause(self, data: dict[str, Any]) -> dict[str, Any]:
        await self.session.pause()
        return {}

    async def _cmd_stop(self, data: dict[str, Any]) -> dict[str, Any]:
        await self.session.stop()
        return {}

    async def _cmd_suspend(self, data: dict[str, Any]) -> dict[str, Any]:
        await self.session.suspend()
        return {}

    async def _cmd_inspect_state(self, data: dict[str, Any]) -> dict[str, Any]:
        if "snapshot_id" in data:
            values = self.session.inspector.get(int(data["snapshot_id"])).values
        else:
            values = self.session.get_current_state() or {}
        path = data.get("path")
        if path:
            missing = object()
            value = get_value(values, path, missing)
            if value is missing:
                raise ProtocolError(f"No value at {path!r}")
            result: dict[str, Any] = {"path": path, "summary": summarise(value)}
            if data.get("full"):
                result["value"] = _jsonable(value)
            return result
        return {
            "state": {k: summarise(v) for k, v in values.items()},
            "paused": self.session.is_paused,
        }

    async def _cmd_get_diff(self, data: dict[str, Any]) -> dict[str, Any]:
        snapshots = self.session.snapshots()
        if "from" in data and "to" in data:
            old, new = int(data["from"]), int(data["to"])
        elif len(snapshots) >= 2:
            old, new = snapshots[-2].id, snapshots[-1].id
        else:
            raise ProtocolError("get_diff needs two snapshots (data.from and data.to)")
        return {"from": old, "to": new, "diff": self.session.diff(old, new).to_json()}

    async def _cmd_list_snapshots(self, data: dict[str, Any]) -> dict[str, Any]:
        return {
            "snapshots": [
                {
                    "id": s.id,
                    "node_id": s.node_id,
                    "position": s.position,
                    "step": s.step,
                    "time": s.time,
                    "bytes": s.size,
                }
                for s in self.session.snapshots()
            ]
        }


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "tolist"):
        return value.tolist()
    return repr(value)
