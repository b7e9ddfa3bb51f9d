"""Debugger parts on their own: the safe evaluator, breakpoints, the inspector."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch

from midrun.debug import expressions
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
    LimitError,
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


def test_evaluation_errors_are_specific() -> None:
    with pytest.raises(EvaluationError, match="missing"):
        Expression("missing > 1").evaluate({})
    with pytest.raises(EvaluationError, match="ZeroDivisionError"):
        Expression("1 / n").evaluate({"n": 0})
    with pytest.raises(EvaluationError, match="adds numbers only"):
        Expression("sum(lists, []) > 0").evaluate({"lists": [[0], [1]]})
    with pytest.raises(EvaluationError, match="formats numbers only"):
        Expression("fmt % n").evaluate({"fmt": "%0999999999d", "n": 1})


@pytest.mark.parametrize(
    ("text", "operator"),
    [
        ("(10**10000)**10000 > 0", "'**' would make an integer"),
        ("sum([[0]*1000]*100000, []) > 0", "'*' would make a list"),
        ("len('a'*100000*100000) > 0", "'*' would make a str"),
        ("str([[0] * 100000] * 100000) == ''", "'*' would make a list"),
        ("len([[0] * 999] * 1000 + [[0] * 999] * 1000) > 0", "'+' would make a list"),
        ("len({1: 'a' * 600000, 2: 'b' * 600000}) > 0", "making a dict"),
    ],
)
def test_expressions_unbounded_by_construction_are_refused_when_set(text, operator) -> None:
    with pytest.raises(ExpressionError, match=re.escape(f"refused: {operator}")):
        Expression(text)


@pytest.mark.parametrize(
    ("text", "names", "limit"),
    [
        ("(n ** 10000) ** 10000 > 0", {"n": 10**10000}, "int_bits"),
        ("n * n * n * n > 0", {"n": 2**40000}, "int_bits"),
        ("len(s * k * k) > 0", {"s": "a", "k": 100000}, "size"),
        ("len([row] * k) > 0", {"row": [0] * 1000, "k": 100000}, "size"),
        ("str([[0] * k] * k) == ''", {"k": 100000}, "size"),
        ("len(s + s) > 0", {"s": "x" * 600_000}, "size"),
    ],
)
def test_evaluation_stops_before_a_value_passes_a_limit(text, names, limit) -> None:
    expression = Expression(text)  # fine when set: only the values make it big
    with pytest.raises(LimitError) as caught:
        expression.evaluate(names)
    assert caught.value.type == "condition_limit_exceeded"
    assert caught.value.extra_info["limit"] == limit


def test_evaluation_within_the_limits_still_works() -> None:
    assert Expression("len(s * 1000) == 1000 and 2 ** 1000 > n").evaluate({"s": "a", "n": 7})
    assert Expression("len([[0] * 100] * 100) == 100").evaluate({})
    assert Expression("sum(xs) == 6 and sum(xs, 1.5) == 7.5").evaluate({"xs": [1, 2, 3]})
    assert Expression("big == big").evaluate({"big": list(range(10_000))})


def test_evaluation_stops_after_its_time(monkeypatch) -> None:
    expression = Expression("n + 1 > 0")
    monkeypatch.setattr(expressions, "MAX_SECONDS", -1.0)
    with pytest.raises(LimitError, match="ran longer than") as caught:
        expression.evaluate({"n": 1})
    assert caught.value.extra_info["limit"] == "seconds"


def test_expressions_that_nest_too_deeply_or_are_too_long_are_refused() -> None:
    with pytest.raises(ExpressionError, match="nests deeper than 64"):
        Expression("-" * 100 + "1")
    with pytest.raises(ExpressionError, match="nest"):
        Expression("(" * 900 + "1" + ")" * 900)
    with pytest.raises(ExpressionError, match="at most 2000 characters"):
        Expression("1 + " * 600 + "1")


def test_a_condition_or_log_that_passes_a_limit_disables_its_breakpoint() -> None:
    names = {"s": "ab", "k": 10**6, "n": 2}
    cond = Breakpoint.create(node_id="a", condition="len(s * k) > 0")
    assert cond.check(names, "run") is False
    assert cond.enabled is False and "'*' would make a str" in (cond.failure or "")
    logpoint = Breakpoint.create(node_id="a", log_message="n={n} {s * k}")
    assert logpoint.check(names, "run") is True
    assert logpoint.message(names) is None and logpoint.enabled is False
    fine = Breakpoint.create(node_id="a", log_message="n={n} {s * 3}")
    assert fine.message(names) == "n=2 ababab" and fine.enabled and fine.failure is None
    long = Breakpoint.create(node_id="a", log_message="{s * 100000}")
    assert len(long.message(names) or "") == expressions.MAX_RENDERED + 1


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
