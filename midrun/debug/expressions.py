"""A safe evaluator for breakpoint conditions and logpoint interpolations.

Conditions are Python-like expressions over a run's values: dotted paths (``state.a.b``,
``inputs.seed``), indexing, comparisons, ``and``/``or``/``not``, arithmetic, literals and a
few whitelisted functions (``len``, ``abs``, ``min``, ``max``, ``round``, ``int``,
``float``, ``str``, ``bool``, ``sum``, ``any``, ``all``). Nothing else: no attribute whose
name starts with an underscore, no other calls, no imports, no comprehensions, no lambdas.
An expression is parsed and checked when it is set, so a malformed one is refused then,
not when it is hit.

Evaluation is bounded, so a condition cannot hold a worker or the server: an integer an
operator makes has at most ``MAX_INT_BITS`` bits, a string, list, tuple, set or dict at
most ``MAX_SIZE`` items counted as a tree (``[[0] * 1000] * 1000`` is a million), ``sum``
adds numbers only, ``%`` formats no strings, and one evaluation stops after
``MAX_SECONDS``. The sizes are estimated *before* the operation runs. Going past a limit
raises :class:`LimitError`, which names the operator; a breakpoint whose condition or log
message raises it is disabled (see :meth:`midrun.debug.breakpoints.Breakpoint.check`). A
part of an expression made of literals only is evaluated when the expression is set, so
``(10**10000)**10000`` or ``'a' * 10**6 * 10**6`` is refused then, naming its operator.
"""

from __future__ import annotations

import ast
import operator
import time
from collections.abc import Callable, Mapping
from typing import Any

from midrun.core.errors import MidrunError


def _sum(values: Any, start: Any = 0) -> Any:
    """``sum`` of numbers only: adding lists or strings is quadratic."""
    items = list(values)
    for value in (start, *items):
        if not isinstance(value, (int, float, complex)):
            raise TypeError(f"sum() adds numbers only, not {type(value).__name__}")
    return sum(items, start)


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
    "sum": _sum,
    "any": any,
    "all": all,
}
CONSTANTS = {"True": True, "False": False, "None": None}
MAX_INT_BITS = 100_000  # about 30,000 decimal digits
MAX_SIZE = 1_000_000  # items (characters of a string) of a value an operator makes
MAX_SECONDS = 0.1  # one evaluation
MAX_DEPTH = 64  # nesting of an expression
MAX_TEXT = 2_000  # characters of an expression
MAX_RENDERED = 4_000  # characters of a rendered log message

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


class LimitError(EvaluationError):
    """Evaluating would pass a limit (size, time): the expression is stopped."""

    type = "condition_limit_exceeded"


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

    __slots__ = ("_deadline", "_tree", "text")

    def __init__(self, text: str) -> None:
        if not isinstance(text, str) or not text.strip():
            raise ExpressionError("A condition must be a non-empty expression", expression=text)
        if len(text) > MAX_TEXT:
            raise ExpressionError(f"A condition is at most {MAX_TEXT} characters",
                                  expression=text[:100])  # fmt: skip
        try:
            tree = ast.parse(text.strip(), mode="eval")
        except SyntaxError as exc:
            raise ExpressionError(
                f"Condition {text!r} is not valid: {exc.msg}", expression=text
            ) from exc
        except (RecursionError, MemoryError):
            raise ExpressionError(f"Condition {text!r} nests too deeply",
                                  expression=text) from None  # fmt: skip
        if _depth(tree) > MAX_DEPTH:
            raise ExpressionError(f"Condition {text!r} nests deeper than {MAX_DEPTH} levels",
                                  expression=text)  # fmt: skip
        _check(tree, text)
        self.text = text
        self._tree = tree.body
        self._deadline = 0.0
        self._fold(tree.body)

    def _fold(self, node: ast.AST) -> None:
        """Evaluate each part made of literals only: one that passes a limit can only ever
        pass it, so the expression is refused now, naming the operator."""
        if not isinstance(node, ast.expr) or isinstance(node, ast.Slice):
            return  # an operator, a context or a slice: folded with its expression
        if _literal(node) and not isinstance(node, (ast.Constant, ast.Name)):
            try:
                self._evaluate(node, {})
            except LimitError as exc:
                raise ExpressionError(exc.message.replace(
                    f"{self.text!r}: ", f"Condition {self.text!r} is refused: "),
                    expression=self.text, limit=exc.extra_info.get("limit"),
                ) from None  # fmt: skip
            except EvaluationError:
                pass  # fails whatever the values: reported when it is met
            return
        for child in ast.iter_child_nodes(node):
            self._fold(child)

    def __repr__(self) -> str:
        return f"Expression({self.text!r})"

    def evaluate(self, names: Mapping[str, Any]) -> Any:
        """The expression's value for ``names``; :class:`EvaluationError` when it fails on
        them, :class:`LimitError` when it would pass a limit."""
        return self._evaluate(self._tree, names)

    def _evaluate(self, tree: ast.AST, names: Mapping[str, Any]) -> Any:
        self._deadline = time.monotonic() + MAX_SECONDS
        try:
            return self._eval(tree, names)
        except _TooBig as exc:
            raise LimitError(f"{self.text!r}: {exc.args[0]}", expression=self.text,
                             limit=exc.args[1]) from None  # fmt: skip
        except MemoryError:
            raise LimitError(f"{self.text!r} ran out of memory", expression=self.text,
                             limit="memory") from None  # fmt: skip
        except RecursionError:
            raise LimitError(f"{self.text!r} nests too deeply", expression=self.text,
                             limit="depth") from None  # fmt: skip
        except Missing as exc:
            raise EvaluationError(
                f"{self.text!r}: no value for {exc.args[0]!r}", expression=self.text
            ) from exc
        except (TypeError, ValueError, ZeroDivisionError, OverflowError) as exc:
            raise EvaluationError(
                f"{self.text!r}: {type(exc).__name__}: {exc}", expression=self.text
            ) from exc

    def _eval(self, node: ast.AST, names: Mapping[str, Any]) -> Any:
        if time.monotonic() > self._deadline:
            raise LimitError(
                f"{self.text!r} ran longer than {MAX_SECONDS} s",
                expression=self.text,
                limit="seconds",
            )
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
            _bound(node.op, left, right)
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
            _made(f"a {type(node).__name__.lower()}", sum(size(i) for i in items))
            return {ast.List: list, ast.Tuple: tuple, ast.Set: set}[type(node)](items)
        if isinstance(node, ast.Dict):
            pairs = [(self._eval(k, names), self._eval(v, names))  # type: ignore[arg-type]
                     for k, v in zip(node.keys, node.values, strict=True)]  # fmt: skip
            _made("a dict", sum(size(k) + size(v) for k, v in pairs))
            return dict(pairs)
        raise ExpressionError(f"Unsupported expression element {type(node).__name__}")


class _TooBig(Exception):
    """``(message, limit)``: an operation would make a value past a limit."""


_SYMBOL = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.FloorDiv: "//",
           ast.Mod: "%", ast.Pow: "**"}  # fmt: skip
_CONTAINERS = (str, bytes, list, tuple, set, frozenset, dict)


def size(value: Any, limit: int = MAX_SIZE) -> int:
    """How many items ``value`` holds, counted as a tree (a list held twice counts
    twice, as printing or comparing it would), stopping once past ``limit``. A string
    counts its characters; anything else (a number, a tensor) counts 1."""
    total, stack = 0, [value]
    while stack and total <= limit:
        item = stack.pop()
        total += 1
        if isinstance(item, (str, bytes)):
            total += len(item)
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, (list, tuple, set, frozenset)):
            if len(item) > limit:
                return total + len(item)
            stack.extend(item)
    return total


def _made(what: str, items: int, symbol: str | None = None) -> None:
    if items > MAX_SIZE:
        by = f"{symbol!r} would make" if symbol else "making"
        raise _TooBig(f"{by} {what} of about {items:,} items (at most {MAX_SIZE:,})", "size")


def _bound(op: ast.operator, left: Any, right: Any) -> None:
    """Refuse ``left op right`` before it runs when its result would pass a limit."""
    symbol = _SYMBOL[type(op)]
    if isinstance(left, bool) or isinstance(right, bool):
        return
    if isinstance(left, int) and isinstance(right, int):
        if isinstance(op, ast.Pow):
            bits = 0 if right < 0 or abs(left) < 2 else left.bit_length() * right
        elif isinstance(op, ast.Mult):
            bits = left.bit_length() + right.bit_length()
        else:
            return
        if bits > MAX_INT_BITS:
            raise _TooBig(f"{symbol!r} would make an integer of about {bits:,} bits "
                          f"(at most {MAX_INT_BITS:,})", "int_bits")  # fmt: skip
        return
    if isinstance(op, ast.Mult):
        for seq, count in ((left, right), (right, left)):
            if isinstance(seq, _CONTAINERS) and isinstance(count, int):
                one = size(seq) - 1
                _made(f"a {type(seq).__name__}", max(count, 0) * one, symbol)
    elif isinstance(op, ast.Add) and isinstance(left, _CONTAINERS):
        _made(f"a {type(left).__name__}", size(left) + size(right) - 2, symbol)
    elif isinstance(op, ast.Mod) and isinstance(left, (str, bytes)):
        raise TypeError("'%' formats numbers only here, not strings")


def _literal(node: ast.AST) -> bool:
    """Whether ``node`` is made of literals only (no names but True/False/None)."""
    return all(not isinstance(n, ast.Name) or n.id in CONSTANTS for n in ast.walk(node))


def _depth(node: ast.AST, level: int = 0) -> int:
    children = list(ast.iter_child_nodes(node))
    if not children or level > MAX_DEPTH:
        return level
    return max(_depth(child, level + 1) for child in children)


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
        """The message for ``names``: a part that fails shows ``<why>``; one that passes a
        limit raises :class:`LimitError`. At most ``MAX_RENDERED`` characters."""
        out, length = [], 0
        for part in self.parts:
            if isinstance(part, str):
                text = part
            else:
                try:
                    value = part.evaluate(names)
                except LimitError:
                    raise
                except EvaluationError as exc:
                    value = f"<{exc.message}>"
                if size(value) > MAX_SIZE:
                    raise LimitError(f"{{{part.text}}} is too large to print",
                                     expression=part.text, limit="size")  # fmt: skip
                text = str(value)
            out.append(text)
            length += len(text)
            if length > MAX_RENDERED:
                return "".join(out)[:MAX_RENDERED] + "…"
        return "".join(out)
