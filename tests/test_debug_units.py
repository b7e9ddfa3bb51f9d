"""Debugger parts on their own: the safe evaluator, breakpoints, the inspector."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from midrun.debug.breakpoints import (
    Breakpoint,
    BreakpointError,
    BreakpointPosition,
    BreakpointSet,
    BreakpointType,
    HitCondition,
)
from midrun.debug.expressions import (
    EvaluationError,
    Expression,
    ExpressionError,
    get_value,
    interpolate,
)
from midrun.debug.inspector import Inspector, StateDiff, summarise


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("state.n >= 3 and len(items) % 2 == 0", True),
        ("not (n < 3) or missing_is_fine", True),
        ("state['n'] * 2 + 1 == 9", True),
        ("items[-1] in [2, 3] and 'z' not in name", True),
        ("max(items) - min(items) == 1 and abs(-n) == 4", True),
        ("nested.a.b[0].c > 1", True),
        ("1 < n < 5", True),
        ("'big' if n > 3 else 'small'", "big"),
        ("round(ratio, 1)", 0.3),
        ("name[1:3]", "ab"),
    ],
)
def test_expressions_evaluate(text: str, expected) -> None:
    names = {
        "state": {"n": 4},
        "n": 4,
        "items": [1, 2],
        "name": "xabc",
        "nested": {"a": {"b": [{"c": 2}]}},
        "ratio": 0.3333,
    }
    assert Expression(text).evaluate(names) == expected


@pytest.mark.parametrize(
    "text",
    [
        "__import__('os').system('true')",
        "x.__class__.__mro__",
        "open('/etc/passwd')",
        "getattr(x, 'y')",
        "[a for a in b]",
        "lambda: 1",
        "x := 3",
        "a = 1",
        "",
        "f(x)",
        "x._private",
        "len(x, key=1)",
        "(yield)",
        "await x",
        "a +",
    ],
)
def test_unsafe_or_malformed_expressions_are_refused_when_set(text: str) -> None:
    with pytest.raises(ExpressionError):
        Expression(text)


def test_evaluation_errors_are_specific_and_bounded() -> None:
    with pytest.raises(EvaluationError, match="missing"):
        Expression("missing > 1").evaluate({})
    with pytest.raises(EvaluationError, match="ZeroDivisionError"):
        Expression("1 / n").evaluate({"n": 0})
    with pytest.raises(EvaluationError, match="too large"):
        Expression("2 ** 100000000").evaluate({})
    with pytest.raises(EvaluationError, match="too large"):
        Expression("'x' * 10000000000").evaluate({})


def test_get_value_and_interpolation() -> None:
    state = {"a": {"b": [{"c": 5}], "d.e": 1}, "list": [10, 20]}
    assert get_value(state, "a.b.0.c") == 5
    assert get_value(state, "list.1") == 20
    assert get_value(state, "a.x.y", "default") == "default"
    assert get_value(state, "list.9", None) is None
    assert interpolate("c={a.b[0].c} n={len(list)} {{literal}}", state) == "c=5 n=2 {literal}"
    with pytest.raises(ExpressionError):
        interpolate("broken {a.b", state)


@pytest.mark.parametrize(
    ("text", "hits_that_match"),
    [
        (">= 3", [3, 4, 5, 6]),
        ("% 2 == 0", [2, 4, 6]),
        ("% 3", [3, 6]),
        ("4", [4]),
        ("< 3", [1, 2]),
        ("!= 2", [1, 3, 4, 5, 6]),
        ("> 5", [6]),
    ],
)
def test_hit_conditions(text: str, hits_that_match: list[int]) -> None:
    condition = HitCondition.parse(text)
    assert [n for n in range(1, 7) if condition.matches(n)] == hits_that_match


def test_bad_breakpoints_are_refused() -> None:
    for kwargs, message in [
        ({"node_id": "a", "condition": "x >"}, "not valid"),
        ({"node_id": "a", "hit_condition": "sometimes"}, "not understood"),
        ({"node_id": "a", "hit_condition": "% 0"}, "positive"),
        ({"node_id": "a", "ignore_count": -1}, "ignore_count"),
        ({"position": "before"}, "node_id"),
        ({"node_id": "a", "position": "sideways"}, "position"),
        ({"node_id": "a", "position": "step"}, "step=k"),
        ({"node_id": "a", "step": 3}, "position='step'"),
        ({"node_id": "a", "bp_type": "state"}, "state_key"),
        ({"node_id": "a", "log_message": "x={x"}, "Unclosed"),
    ]:
        with pytest.raises((BreakpointError, ExpressionError), match=message):
            Breakpoint.create(**kwargs)


def test_breakpoints_round_trip_json_with_conditions_as_text() -> None:
    bp = Breakpoint.create(
        node_id="3",
        position="step",
        every=5,
        condition="step > 0",
        hit_condition=">= 2",
        ignore_count=1,
        log_message="at {step}",
        workflow_id="wf",
    )
    bp.hit_count = 4
    data = json.loads(json.dumps(bp.to_json()))
    back = Breakpoint.from_json(data)
    assert back.to_json() == bp.to_json()
    assert back.bp_type == BreakpointType.CONDITIONAL and back.position == BreakpointPosition.STEP
    with pytest.raises(BreakpointError, match="callable"):
        Breakpoint.create(node_id="3", condition=lambda names: True).to_json()
    with pytest.raises(BreakpointError, match="Unknown breakpoint fields"):
        Breakpoint.from_json({**data, "colour": "red"})


def test_breakpoint_set_indexes_by_node_and_checks_nodes() -> None:
    bps = BreakpointSet()
    a = bps.add(Breakpoint.create(node_id="a"))
    anywhere = bps.add(Breakpoint.create(bp_type="exception"))
    assert bps.candidates("a") == [a, anywhere]
    assert bps.candidates("zzz") == [anywhere]
    bps.bind_nodes(["a", "b"])
    with pytest.raises(BreakpointError, match="No node 'c'"):
        bps.add(Breakpoint.create(node_id="c"))
    bps.remove(a.id)
    with pytest.raises(BreakpointError, match="No breakpoint"):
        bps.remove(a.id)
    loaded = BreakpointSet()
    loaded.load_json(bps.to_json())
    assert [b.id for b in loaded] == [anywhere.id]


def test_summaries_of_tensors_and_large_values() -> None:
    t = torch.arange(12, dtype=torch.float32).reshape(3, 4)
    summary = summarise(t)
    assert summary == {
        "type": "tensor",
        "shape": [3, 4],
        "dtype": "torch.float32",
        "device": "cpu",
        "numel": 12,
        "min": 0.0,
        "max": 11.0,
        "mean": 5.5,
    }
    half = summarise(torch.ones(2, 2, dtype=torch.float16))
    assert half["dtype"] == "torch.float16" and half["mean"] == 1.0
    arr = summarise(np.array([[1, 2], [3, 5]], dtype=np.int64))
    assert arr["shape"] == [2, 2] and arr["max"] == 5.0 and arr["mean"] == 2.75
    long_text = summarise("x" * 10_000)
    assert long_text["elided"] and long_text["size"] == 10_000
    assert len(long_text["preview"]) < 300


def test_state_diff_nested_paths_and_tensors() -> None:
    old = {
        "a": 1,
        "nested": {"x": 1, "y": {"z": [1]}},
        "gone": True,
        "t": torch.zeros(2),
        "same": torch.ones(3),
    }
    new = {
        "a": 2,
        "nested": {"x": 1, "y": {"z": [1, 2]}, "w": "new"},
        "t": torch.ones(2),
        "same": torch.ones(3),
        "added": None,
    }
    diff = StateDiff.between(old, new)
    assert set(diff.changed) == {"a", "nested.y.z", "t"}
    assert set(diff.added) == {"nested.w", "added"}
    assert set(diff.removed) == {"gone"}
    assert diff.to_json()["changed"]["t"]["new"]["mean"] == 1.0
    assert StateDiff.between(old, old).empty


def test_inspector_history_is_bounded_and_frozen() -> None:
    inspector = Inspector(max_snapshots=3)
    state = {"items": [1]}
    first = inspector.record("r", "n", "after", None, state)
    state["items"].append(2)  # mutating the live state must not rewrite history
    second = inspector.record("r", "n", "after", None, state)
    assert first.values == {"items": [1]} and second.values == {"items": [1, 2]}
    assert inspector.diff(first.id, second.id).changed == {"items": ([1], [1, 2])}
    for _ in range(5):
        inspector.record("r", "n", "after", None, state)
    assert len(inspector) == 3
    with pytest.raises(Exception, match="No snapshot"):
        inspector.get(first.id)
    big = Inspector(max_snapshots=100, max_bytes=50_000)
    for _ in range(10):
        big.record("r", "n", "after", None, {"t": torch.zeros(4096)})  # 16 KB each
    assert big.bytes <= 50_000 and len(big) == 3
    assert big.latest().summary()["values"]["t"]["shape"] == [4096]
