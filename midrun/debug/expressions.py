"""A safe evaluator for breakpoint conditions and logpoint interpolations.

Conditions are Python-like expressions over a run's values: dotted paths (``state.a.b``,
``inputs.seed``), indexing, comparisons, ``and``/``or``/``not``, arithmetic, literals and a
few whitelisted functions (``len``, ``abs``, ``min``, ``max``, ``round``, ``int``,
``float``, ``str``, ``bool``, ``sum``, ``any``, ``all``). Nothing else: no attribute whose
name starts with an underscore, no other calls, no imports, no comprehensions, no lambdas.
An expression is parsed and checked when it is set, so a malformed one is refused then,
not when it is hit.
"""

from __future__ import annotations

import ast
import operator
from collections.abc import Callable, Mapping
from typing import Any

from midrun.core.errors import MidrunError

FUNCTIONS: dict[str, Callable[..., Any]] = {
    "len": len,
    "abs": abs,
    "min": min,
    "max": max,
    "round": round,
    "int": int,
    "float": float,
    "str": str,
    "bool": bool,
    "sum": sum,
    "any": any,
    "all": all,
}
CONSTANTS = {"True": True, "False": False, "None": None}
MAX_POWER = 10_000
MAX_SEQUENCE = 100_000

_BINARY: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_COMPARE: dict[type[ast.cmpop], Callable[[Any, Any], bool]] = {
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
    ast.In: lambda a, b: a in b,
    ast.NotIn: lambda a, b: a not in b,
    ast.Is: operator.is_,
    ast.IsNot: operator.is_not,
}
_UNARY: dict[type[ast.unaryop], Callable[[Any], Any]] = {
    ast.Not: operator.not_,
    ast.USub: operator.neg,
    ast.UAdd: operator.pos,
}
_ALLOWED = (
    ast.Expression,
    ast.BoolOp,
    ast.And,
    ast.Or,
    ast.BinOp,
    ast.UnaryOp,
    ast.Compare,
    ast.Name,
    ast.Load,
    ast.Constant,
    ast.Attribute,
    ast.Subscript,
    ast.Slice,
    ast.Call,
    ast.List,
    ast.Tuple,
    ast.Set,
    ast.Dict,
    ast.IfExp,
    *_BINARY,
    *_COMPARE,
    *_UNARY,
)


class ExpressionError(MidrunError):
    """An expression is malformed or uses something the evaluator does not allow."""

    type = "invalid_condition"


class EvaluationError(MidrunError):
    """A well-formed expression failed on the values it met (missing key, bad types)."""

    type = "condition_evaluation_failed"


class Missing(Exception):
    """A name or path is absent from the values."""


def _check(tree: ast.AST, text: str) -> None:
    for node in ast.walk(tree):
        if not isinstance(node, _ALLOWED):
            raise ExpressionError(
                f"{type(node).__name__} is not allowed in a condition: {text!r}",
                expression=text,
            )
        if isinstance(node, ast.Attribute) and node.attr.startswith("_"):
            raise ExpressionError(
                f"Attribute {node.attr!r} is not allowed (names starting with _ are private): "
                f"{text!r}",
                expression=text,
            )
        if isinstance(node, ast.Name) and node.id.startswith("__"):
            raise ExpressionError(f"Name {node.id!r} is not allowed: {text!r}", expression=text)
        if isinstance(node, ast.Call):
            if not isinstance(node.func, ast.Name) or node.func.id not in FUNCTIONS:
                name = ast.unparse(node.func)
                raise ExpressionError(
                    f"Call to {name!r} is not allowed; allowed: {', '.join(sorted(FUNCTIONS))}",
                    expression=text,
                )
            if node.keywords:
                raise ExpressionError("Keyword arguments are not allowed", expression=text)


def lookup(value: Any, key: Any) -> Any:
    """``value[key]`` for mappings and sequences, else a public attribute."""
    if isinstance(value, Mapping):
        if key in value:
            return value[key]
        raise Missing(key)
    if isinstance(key, int) and isinstance(value, (list, tuple, str)):
        try:
            return value[key]
        except IndexError as exc:
            raise Missing(key) from exc
    if isinstance(key, str) and not key.startswith("_") and hasattr(value, key):
        return getattr(value, key)
    raise Missing(key)


class Expression:
    """A checked expression, evaluated against a mapping of names."""

    __slots__ = ("_tree", "text")

    def __init__(self, text: str) -> None:
        if not isinstance(text, str) or not text.strip():
            raise ExpressionError("A condition must be a non-empty expression", expression=text)
        try:
            tree = ast.parse(text.strip(), mode="eval")
        except SyntaxError as exc:
            raise ExpressionError(
                f"Condition {text!r} is not valid: {exc.msg}", expression=text
            ) from exc
        _check(tree, text)
        self.text = text
        self._tree = tree.body

    def __repr__(self) -> str:
        return f"Expression({self.text!r})"

    def evaluate(self, names: Mapping[str, Any]) -> Any:
        try:
            return self._eval(self._tree, names)
        except Missing as exc:
            raise EvaluationError(
                f"{self.text!r}: no value for {exc.args[0]!r}", expression=self.text
            ) from exc
        except (TypeError, ValueError, ZeroDivisionError, OverflowError) as exc:
            raise EvaluationError(
                f"{self.text!r}: {type(exc).__name__}: {exc}", expression=self.text
            ) from exc

    def _eval(self, node: ast.AST, names: Mapping[str, Any]) -> Any:
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, ast.Name):
            if node.id in names:
                return names[node.id]
            if node.id in CONSTANTS:
                return CONSTANTS[node.id]
            raise Missing(node.id)
        if isinstance(node, ast.Attribute):
            return lookup(self._eval(node.value, names), node.attr)
        if isinstance(node, ast.Subscript):
            container = self._eval(node.value, names)
            if isinstance(node.slice, ast.Slice):
                parts = [
                    None if p is None else self._eval(p, names)
                    for p in (node.slice.lower, node.slice.upper, node.slice.step)
                ]
                return container[slice(*parts)]
            return lookup(container, self._eval(node.slice, names))
        if isinstance(node, ast.BoolOp):
            if isinstance(node.op, ast.And):
                result: Any = True
                for value in node.values:
                    result = self._eval(value, names)
                    if not result:
                        return result
                return result
            result = False
            for value in node.values:
                result = self._eval(value, names)
                if result:
                    return result
            return result
        if isinstance(node, ast.UnaryOp):
            return _UNARY[type(node.op)](self._eval(node.operand, names))
        if isinstance(node, ast.BinOp):
            left, right = self._eval(node.left, names), self._eval(node.right, names)
            if (
                isinstance(node.op, ast.Pow)
                and isinstance(right, (int, float))
                and abs(right) > MAX_POWER
            ):
                raise ValueError(f"exponent {right} is too large")
            if isinstance(node.op, ast.Mult) and (
                (
                    isinstance(left, (str, list, tuple))
                    and isinstance(right, int)
                    and right > MAX_SEQUENCE
                )
                or (
                    isinstance(right, (str, list, tuple))
                    and isinstance(left, int)
                    and left > MAX_SEQUENCE
                )
            ):
                raise ValueError("sequence repetition is too large")
            return _BINARY[type(node.op)](left, right)
        if isinstance(node, ast.Compare):
            left = self._eval(node.left, names)
            for op, comparator in zip(node.ops, node.comparators, strict=True):
                right = self._eval(comparator, names)
                if not _COMPARE[type(op)](left, right):
                    return False
                left = right
            return True
        if isinstance(node, ast.IfExp):
            branch = node.body if self._eval(node.test, names) else node.orelse
            return self._eval(branch, names)
        if isinstance(node, ast.Call):
            fn = FUNCTIONS[node.func.id]  # type: ignore[attr-defined]
            return fn(*(self._eval(a, names) for a in node.args))
        if isinstance(node, (ast.List, ast.Tuple, ast.Set)):
            items = [self._eval(e, names) for e in node.elts]
            return {ast.List: list, ast.Tuple: tuple, ast.Set: set}[type(node)](items)
        if isinstance(node, ast.Dict):
            return {
                self._eval(k, names): self._eval(v, names)  # type: ignore[arg-type]
                for k, v in zip(node.keys, node.values, strict=True)
            }
        raise ExpressionError(f"Unsupported expression element {type(node).__name__}")


def get_value(state: Any, path: str, default: Any = None) -> Any:
    """The value at a dotted path (``"a.b.0.c"``) in nested dicts/lists/objects, or default."""
    value = state
    for part in path.split(".") if path else []:
        key: Any = (
            int(part) if part.lstrip("-").isdigit() and not isinstance(value, Mapping) else part
        )
        try:
            value = lookup(value, key)
        except Missing:
            return default
    return value


def interpolate(message: str, names: Mapping[str, Any]) -> str:
    """A logpoint message with each ``{expression}`` replaced by its value (``{{`` for a
    literal brace). Expressions are checked like conditions."""
    return Template(message).render(names)


class Template:
    """A logpoint message parsed once: text and ``{expression}`` parts."""

    __slots__ = ("parts", "text")

    def __init__(self, text: str) -> None:
        self.text = text
        self.parts: list[str | Expression] = []
        buffer, i = [], 0
        while i < len(text):
            char = text[i]
            if char in "{}" and text[i : i + 2] in ("{{", "}}"):
                buffer.append(char)
                i += 2
                continue
            if char == "{":
                end = text.find("}", i)
                if end < 0:
                    raise ExpressionError(f"Unclosed '{{' in log message {text!r}", expression=text)
                if buffer:
                    self.parts.append("".join(buffer))
                    buffer = []
                self.parts.append(Expression(text[i + 1 : end]))
                i = end + 1
                continue
            if char == "}":
                raise ExpressionError(f"Unmatched '}}' in log message {text!r}", expression=text)
            buffer.append(char)
            i += 1
        if buffer:
            self.parts.append("".join(buffer))

    def render(self, names: Mapping[str, Any]) -> str:
        out = []
        for part in self.parts:
            if isinstance(part, str):
                out.append(part)
                continue
            try:
                out.append(str(part.evaluate(names)))
            except EvaluationError as exc:
                out.append(f"<{exc.message}>")
        return "".join(out)
