"""Pure-Python node types for tests: arithmetic, an output collector, slow and failing
nodes, and a steppable counter. Each counts its executions so caching is observable."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from midrun.graph.registry import NodeRegistry
from midrun.graph.types import (
    COMBO,
    FLOAT,
    HIDDEN_RUN_CONTEXT,
    HIDDEN_UNIQUE_ID,
    INT,
    STRING,
    InputSpec,
    NodeResult,
    NodeType,
    OutputSpec,
)

CALLS: Counter[str] = Counter()
ACTIVE = {"now": 0, "peak": 0}
_LOCK = threading.Lock()


def reset() -> None:
    CALLS.clear()
    ACTIVE.update(now=0, peak=0)


def const(value: int) -> tuple[int]:
    CALLS["Const"] += 1
    return (value,)


def add(a: int, b: int) -> tuple[int]:
    CALLS["Add"] += 1
    return (a + b,)


def scale(x: float, factor: float = 2.0, mode: str = "mul") -> tuple[float]:
    CALLS["Scale"] += 1
    return (x * factor if mode == "mul" else x / factor,)


def output(value: Any, label: str = "out", unique_id: str = "") -> NodeResult:
    CALLS["Output"] += 1
    return NodeResult(ui={"value": [value], "label": [label], "node": [unique_id]})


def _enter() -> None:
    with _LOCK:
        ACTIVE["now"] += 1
        ACTIVE["peak"] = max(ACTIVE["peak"], ACTIVE["now"])


def _leave() -> None:
    with _LOCK:
        ACTIVE["now"] -= 1


def slow(value: int, seconds: float = 0.2) -> tuple[int]:
    CALLS["Slow"] += 1
    _enter()
    time.sleep(seconds)
    _leave()
    return (value,)


async def slow_async(value: int, seconds: float = 0.2) -> tuple[int]:
    CALLS["SlowAsync"] += 1
    _enter()
    await asyncio.sleep(seconds)
    _leave()
    return (value,)


def boom(value: int, message: str = "boom") -> tuple[int]:
    CALLS["Boom"] += 1
    raise RuntimeError(message)


class CountSteps:
    """Steppable: accumulates ``total += start * (i + 1)`` over ``steps`` steps."""

    def start(self, inputs: dict[str, Any]) -> dict[str, Any]:
        CALLS["CountSteps.start"] += 1
        return {"i": 0, "steps": inputs["steps"], "start": inputs["start"], "total": 0, "trace": []}

    def step(self, state: dict[str, Any]) -> dict[str, Any]:
        CALLS["CountSteps.step"] += 1
        if state.get("fail_at") == state["i"]:
            raise ValueError(f"failed at step {state['i']}")
        i = state["i"] + 1
        return {
            **state,
            "i": i,
            "total": state["total"] + state["start"] * i,
            "trace": [*state["trace"], i],
        }

    def done(self, state: dict[str, Any]) -> bool:
        return state["i"] >= state["steps"]

    def total_steps(self, state: dict[str, Any]) -> int:
        return state["steps"]

    def finish(self, state: dict[str, Any]) -> tuple[int, list[int]]:
        CALLS["CountSteps.finish"] += 1
        return state["total"], state["trace"]


class Ticker:
    """Steppable with a pace: each step sleeps ``delay`` and adds ``gain * i`` to the
    total. ``steps``, ``delay`` and ``gain`` are hot (they change between steps, through
    ``resume`` for a suspended run); ``start`` is not."""

    def start(self, inputs: dict[str, Any]) -> dict[str, Any]:
        return {"i": 0, "start": inputs["start"], "steps": inputs["steps"],
                "delay": inputs["delay"], "gain": inputs["gain"], "total": inputs["start"],
                "trace": []}  # fmt: skip

    def step(self, state: dict[str, Any]) -> dict[str, Any]:
        time.sleep(state["delay"])
        i = state["i"] + 1
        gain = state["gain"]
        return {**state, "i": i, "total": state["total"] + gain * i,
                "trace": [*state["trace"], gain]}  # fmt: skip

    def done(self, state: dict[str, Any]) -> bool:
        return state["i"] >= state["steps"]

    def total_steps(self, state: dict[str, Any]) -> int:
        return state["steps"]

    def resume(self, state: dict[str, Any], inputs: dict[str, Any]) -> dict[str, Any]:
        from midrun.core.errors import InputNotHotSwappable

        if inputs["start"] != state["start"]:
            raise InputNotHotSwappable("start", "the total already includes it")
        return {**state, "steps": inputs["steps"], "delay": inputs["delay"],
                "gain": inputs["gain"]}  # fmt: skip

    def finish(self, state: dict[str, Any]) -> tuple[int, list[int]]:
        return state["total"], state["trace"]


class Tape:
    """Steppable whose state holds bytes (saved as a checkpoint blob): each step appends
    64 bytes of its number; the result is the tape's length and its last byte."""

    def start(self, inputs: dict[str, Any]) -> dict[str, Any]:
        return {"i": 0, "steps": inputs["steps"], "tape": b""}

    def step(self, state: dict[str, Any]) -> dict[str, Any]:
        i = state["i"] + 1
        return {**state, "i": i, "tape": state["tape"] + bytes([i % 256]) * 64}

    def done(self, state: dict[str, Any]) -> bool:
        return state["i"] >= state["steps"]

    def total_steps(self, state: dict[str, Any]) -> int:
        return state["steps"]

    def finish(self, state: dict[str, Any]) -> tuple[int, int]:
        return len(state["tape"]), state["tape"][-1] if state["tape"] else -1


def save_bytes(value: Any, size: int, context: Any) -> NodeResult:
    """Writes ``size`` bytes to the run's output folder (as a SaveImage would), leaving
    nothing when the write fails."""
    CALLS["SaveBytes"] += 1
    folder = Path(context.output_dir)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"bytes_{context.run_id}.bin"
    try:
        path.write_bytes(bytes([len(str(value)) % 256]) * size)
    except OSError:
        path.unlink(missing_ok=True)  # no half-written file left behind
        raise
    return NodeResult(ui={"files": [{"filename": path.name, "size": size}]})


def crash(value: int) -> tuple[int]:
    """Kills its own process, as a node that crashes the interpreter would."""
    os._exit(70)


def test_types() -> list[NodeType]:
    return [
        NodeType(
            "Const",
            (InputSpec("value", INT, default=0, min=-1000, max=1000),),
            (OutputSpec(INT, "value"),),
            const,
        ),
        NodeType("Add", (InputSpec("a", INT), InputSpec("b", INT)), (OutputSpec(INT),), add),
        NodeType(
            "Scale",
            (
                InputSpec("x", "INT,FLOAT", force_input=True),
                InputSpec("factor", FLOAT, default=2.0, min=0.0, max=10.0, step=0.5),
                InputSpec("mode", COMBO, choices=("mul", "div"), section="optional"),
            ),
            (OutputSpec(FLOAT),),
            scale,
        ),
        NodeType(
            "Output",
            (
                InputSpec("value", "*"),
                InputSpec("label", STRING, default="out", section="optional"),
                InputSpec("unique_id", HIDDEN_UNIQUE_ID, section="hidden"),
            ),
            (),
            output,
            output_node=True,
        ),
        NodeType(
            "Slow",
            (InputSpec("value", INT), InputSpec("seconds", FLOAT, default=0.2)),
            (OutputSpec(INT),),
            slow,
        ),
        NodeType(
            "SlowAsync",
            (InputSpec("value", INT), InputSpec("seconds", FLOAT, default=0.2)),
            (OutputSpec(INT),),
            slow_async,
        ),
        NodeType(
            "Boom",
            (InputSpec("value", INT), InputSpec("message", STRING, default="boom")),
            (OutputSpec(INT),),
            boom,
        ),
        NodeType(
            "CountSteps",
            (
                InputSpec("start", INT),
                InputSpec("steps", INT, default=5, min=0, max=10000, hot=True),
            ),
            (OutputSpec(INT, "total"), OutputSpec("LIST", "trace")),
            CountSteps(),
        ),
        NodeType(
            "Ticker",
            (
                InputSpec("start", INT),
                InputSpec("steps", INT, default=10, min=0, max=100000, hot=True),
                InputSpec("delay", FLOAT, default=0.01, min=0.0, max=10.0, hot=True),
                InputSpec("gain", INT, default=1, min=-100, max=100, hot=True),
            ),
            (OutputSpec(INT, "total"), OutputSpec("LIST", "trace")),
            Ticker(),
        ),
        NodeType(
            "Tape",
            (InputSpec("steps", INT, default=5, min=0, max=1000),),
            (OutputSpec(INT, "length"), OutputSpec(INT, "last")),
            Tape(),
        ),
        NodeType(
            "SaveBytes",
            (
                InputSpec("value", "*"),
                InputSpec("size", INT, default=1024, min=0, max=1 << 30),
                InputSpec("context", HIDDEN_RUN_CONTEXT, section="hidden"),
            ),
            (),
            save_bytes,
            output_node=True,
        ),
        NodeType("Crash", (InputSpec("value", INT),), (OutputSpec(INT),), crash),
        NodeType("Declared", (InputSpec("value", INT),), (OutputSpec(INT),), None),
    ]


def registry() -> NodeRegistry:
    return NodeRegistry(test_types())
