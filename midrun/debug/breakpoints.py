"""Breakpoints: where a run stops (or logs) and under what conditions.

Types: ``node`` (a node reaches a position), ``conditional`` (and a condition holds),
``exception`` (a node raises; optionally only some exception types), ``state`` (a watched
value changes or takes a given value). Positions: ``before``, ``after``, ``on_error`` and
``step`` (inside a steppable node: at step k, or every k steps). Each breakpoint has an
enabled flag, a hit count, an ignore count (skip the first N hits) and an optional hit
condition (``">= 3"``, ``"% 2 == 0"``, ``"5"`` meaning the fifth hit). A logpoint
(``log_message``) emits its interpolated message instead of pausing.

Breakpoints serialise to JSON with conditions as text. A breakpoint belongs to a workflow
(all its runs) or to one run. :class:`BreakpointSet` indexes them by node, so a control
point on a node with no breakpoints costs a dictionary lookup.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from midrun.core.errors import MidrunError
from midrun.debug.expressions import (
    EvaluationError,
    Expression,
    LimitError,
    Template,
    get_value,
)


class BreakpointType(StrEnum):
    NODE = "node"
    CONDITIONAL = "conditional"
    EXCEPTION = "exception"
    STATE = "state"


class BreakpointPosition(StrEnum):
    BEFORE = "before"
    AFTER = "after"
    ON_ERROR = "on_error"
    STEP = "step"


class BreakpointError(MidrunError):
    """A breakpoint cannot be set as asked (bad condition, unknown node, bad counts)."""

    type = "invalid_breakpoint"


_HIT = re.compile(r"^\s*(?:(>=|<=|==|!=|>|<)\s*(\d+)|%\s*(\d+)\s*(?:==\s*(\d+))?|(\d+))\s*$")


@dataclass(frozen=True, slots=True)
class HitCondition:
    """When the n-th hit counts: ``>= 3``, ``% 2 == 0``, ``% 5`` (every 5th), ``4`` (4th)."""

    text: str
    op: str
    number: int
    remainder: int = 0

    @classmethod
    def parse(cls, text: str) -> HitCondition:
        match = _HIT.match(text or "")
        if match is None:
            raise BreakpointError(
                f"Hit condition {text!r} is not understood; use e.g. '>= 3', '% 2 == 0' or '5'"
            )
        op, number, modulus, remainder, exact = match.groups()
        if modulus is not None:
            if int(modulus) == 0:
                raise BreakpointError(f"Hit condition {text!r}: modulus must be positive")
            return cls(text, "%", int(modulus), int(remainder or 0))
        if exact is not None:
            return cls(text, "==", int(exact))
        return cls(text, op, int(number))

    def matches(self, hits: int) -> bool:
        if self.op == "%":
            return hits % self.number == self.remainder
        return {
            ">=": hits >= self.number,
            "<=": hits <= self.number,
            "==": hits == self.number,
            "!=": hits != self.number,
            ">": hits > self.number,
            "<": hits < self.number,
        }[self.op]


Condition = str | Callable[[Mapping[str, Any]], Any]
_ids = itertools.count(1)


@dataclass(slots=True)
class Breakpoint:
    """One breakpoint. Build with :meth:`create` (it checks everything)."""

    id: str
    bp_type: BreakpointType
    position: BreakpointPosition
    node_id: str | None = None
    condition: Condition | None = None
    hit_condition: str | None = None
    ignore_count: int = 0
    log_message: str | None = None
    state_key: str | None = None
    state_value: Any = None
    watch_value: bool = False
    exception_types: tuple[str, ...] = ()
    step: int | None = None
    every: int | None = None
    enabled: bool = True
    workflow_id: str | None = None
    run_id: str | None = None
    hit_count: int = 0
    _expression: Expression | None = field(default=None, repr=False)
    _hit: HitCondition | None = field(default=None, repr=False)
    _template: Template | None = field(default=None, repr=False)
    _last_seen: dict[str, Any] = field(default_factory=dict, repr=False)
    last_error: str | None = None
    failure: str | None = None  # why it was disabled by the evaluator (a limit)

    @classmethod
    def create(
        cls,
        *,
        node_id: str | None = None,
        position: BreakpointPosition | str = BreakpointPosition.BEFORE,
        bp_type: BreakpointType | str | None = None,
        condition: Condition | None = None,
        hit_condition: str | None = None,
        ignore_count: int = 0,
        log_message: str | None = None,
        state_key: str | None = None,
        state_value: Any = None,
        exception_types: Iterable[str] = (),
        step: int | None = None,
        every: int | None = None,
        enabled: bool = True,
        workflow_id: str | None = None,
        run_id: str | None = None,
        id: str | None = None,
        watch_value: bool | None = None,
    ) -> Breakpoint:
        position = _enum(BreakpointPosition, position, "position")
        if bp_type is None:
            bp_type = (
                BreakpointType.STATE
                if state_key
                else BreakpointType.CONDITIONAL
                if condition is not None
                else BreakpointType.EXCEPTION
                if position == BreakpointPosition.ON_ERROR and node_id is None
                else BreakpointType.NODE
            )
        bp_type = _enum(BreakpointType, bp_type, "bp_type")
        if ignore_count < 0:
            raise BreakpointError(f"ignore_count must be >= 0, got {ignore_count}")
        if bp_type == BreakpointType.NODE and node_id is None:
            raise BreakpointError("A node breakpoint needs a node_id")
        if bp_type == BreakpointType.CONDITIONAL and condition is None:
            raise BreakpointError("A conditional breakpoint needs a condition")
        if bp_type == BreakpointType.STATE and not state_key:
            raise BreakpointError("A state-watch breakpoint needs a state_key")
        if bp_type == BreakpointType.EXCEPTION:
            position = BreakpointPosition.ON_ERROR
        if position == BreakpointPosition.STEP:
            if step is None and every is None:
                raise BreakpointError("A step breakpoint needs step=k or every=k")
            for name, value in (("step", step), ("every", every)):
                if value is not None and value < 1:
                    raise BreakpointError(f"{name} must be >= 1, got {value}")
        elif step is not None or every is not None:
            raise BreakpointError("step/every need position='step'")
        bp = cls(
            id=id or f"bp-{next(_ids)}",
            bp_type=bp_type,
            position=position,
            node_id=node_id,
            condition=condition,
            hit_condition=hit_condition,
            ignore_count=ignore_count,
            log_message=log_message,
            state_key=state_key,
            state_value=state_value,
            watch_value=state_value is not None if watch_value is None else watch_value,
            exception_types=tuple(exception_types),
            step=step,
            every=every,
            enabled=enabled,
            workflow_id=workflow_id,
            run_id=run_id,
        )
        if isinstance(condition, str):
            bp._expression = Expression(condition)
        elif condition is not None and not callable(condition):
            raise BreakpointError("condition must be an expression string or a callable")
        if hit_condition:
            bp._hit = HitCondition.parse(hit_condition)
        if log_message is not None:
            bp._template = Template(log_message)
        return bp

    @property
    def is_logpoint(self) -> bool:
        return self.log_message is not None

    def to_json(self) -> dict[str, Any]:
        """Plain data; refuses a callable condition, which cannot be stored."""
        if self.condition is not None and not isinstance(self.condition, str):
            raise BreakpointError(
                f"Breakpoint {self.id} has a Python callable condition, which cannot be "
                "serialised; use an expression string"
            )
        return {
            "id": self.id,
            "bp_type": self.bp_type.value,
            "position": self.position.value,
            "node_id": self.node_id,
            "condition": self.condition,
            "hit_condition": self.hit_condition,
            "ignore_count": self.ignore_count,
            "log_message": self.log_message,
            "state_key": self.state_key,
            "state_value": self.state_value,
            "watch_value": self.watch_value,
            "exception_types": list(self.exception_types),
            "step": self.step,
            "every": self.every,
            "enabled": self.enabled,
            "workflow_id": self.workflow_id,
            "run_id": self.run_id,
            "hit_count": self.hit_count,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Breakpoint:
        known = {
            "id",
            "bp_type",
            "position",
            "node_id",
            "condition",
            "hit_condition",
            "ignore_count",
            "log_message",
            "state_key",
            "state_value",
            "watch_value",
            "exception_types",
            "step",
            "every",
            "enabled",
            "workflow_id",
            "run_id",
        }
        unknown = set(data) - known - {"hit_count"}
        if unknown:
            raise BreakpointError(f"Unknown breakpoint fields: {sorted(unknown)}")
        bp = cls.create(**{k: v for k, v in data.items() if k in known})
        bp.hit_count = int(data.get("hit_count", 0))
        return bp

    # -- evaluation ------------------------------------------------------------------

    def position_matches(self, position: str, step: int | None) -> bool:
        if position != self.position.value:
            return False
        if self.position == BreakpointPosition.STEP:
            if step is None:
                return False
            if self.step is not None and step != self.step:
                return False
            if self.every is not None and step % self.every != 0:
                return False
        return True

    def check(self, names: Mapping[str, Any], run_key: str) -> bool:
        """Whether this breakpoint fires for the values ``names`` (counts the hit)."""
        if self.bp_type == BreakpointType.EXCEPTION and self.exception_types:
            error = names.get("error")
            kinds = {type(error).__name__, *(c.__name__ for c in type(error).__mro__)}
            if not kinds & set(self.exception_types):
                return False
        if self.bp_type == BreakpointType.STATE and not self._state_changed(names, run_key):
            return False
        if self.condition is not None and not self._condition(names):
            return False
        self.hit_count += 1
        if self.hit_count <= self.ignore_count:
            return False
        return self._hit is None or self._hit.matches(self.hit_count)

    def _condition(self, names: Mapping[str, Any]) -> bool:
        try:
            if self._expression is not None:
                result = self._expression.evaluate(names)
            else:
                result = self.condition(names)  # type: ignore[misc,operator]
        except LimitError as exc:
            self._fail(exc)
            return False
        except EvaluationError as exc:
            self.last_error = exc.message
            return False
        except Exception as exc:  # a user's callable
            self.last_error = f"{type(exc).__name__}: {exc}"
            return False
        self.last_error = None
        return bool(result)

    def _state_changed(self, names: Mapping[str, Any], run_key: str) -> bool:
        assert self.state_key is not None
        missing = object()
        value = get_value(names.get("state", {}), self.state_key, missing)
        if self.watch_value:
            return value is not missing and value == self.state_value
        previous = self._last_seen.get(run_key, missing)
        self._last_seen[run_key] = value
        return value is not missing and previous is not missing and previous != value

    def message(self, names: Mapping[str, Any]) -> str | None:
        """The logpoint's message for ``names``; None when rendering it passed a limit
        (the breakpoint is then disabled)."""
        if self._template is None:
            return ""
        try:
            return self._template.render(names)
        except LimitError as exc:
            self._fail(exc)
            return None

    def _fail(self, exc: LimitError) -> None:
        """Its condition or message passed a limit of the evaluator: it is disabled (it
        would pass it again at every point), and ``failure`` says why."""
        self.enabled = False
        self.failure = self.last_error = exc.message


def _enum(kind: type[StrEnum], value: Any, name: str) -> Any:
    try:
        return kind(value)
    except ValueError:
        allowed = ", ".join(m.value for m in kind)  # type: ignore[attr-defined]
        raise BreakpointError(f"{name} {value!r} is not one of: {allowed}") from None


class BreakpointSet:
    """All breakpoints of a session, indexed by node (``None`` = any node)."""

    def __init__(self) -> None:
        self._by_id: dict[str, Breakpoint] = {}
        self._by_node: dict[str | None, list[Breakpoint]] = {}
        self.known_nodes: frozenset[str] | None = None

    def bind_nodes(self, node_ids: Iterable[str]) -> None:
        """Declare the graph's nodes: breakpoints on any other node are refused."""
        self.known_nodes = frozenset(node_ids)
        for bp in self._by_id.values():
            self._check_node(bp.node_id)

    def _check_node(self, node_id: str | None) -> None:
        if node_id is not None and self.known_nodes is not None and node_id not in self.known_nodes:
            known = ", ".join(sorted(self.known_nodes)[:30])
            raise BreakpointError(
                f"No node {node_id!r} in this graph; nodes: {known}", node_id=node_id
            )

    def add(self, bp: Breakpoint) -> Breakpoint:
        self._check_node(bp.node_id)
        if bp.id in self._by_id:
            self.remove(bp.id)
        self._by_id[bp.id] = bp
        self._by_node.setdefault(bp.node_id, []).append(bp)
        return bp

    def remove(self, bp_id: str) -> Breakpoint:
        bp = self.get(bp_id)
        del self._by_id[bp_id]
        bucket = self._by_node[bp.node_id]
        bucket.remove(bp)
        if not bucket:
            del self._by_node[bp.node_id]
        return bp

    def clear(self) -> None:
        self._by_id.clear()
        self._by_node.clear()

    def replace(self, items: Iterable[Breakpoint]) -> None:
        """Hold ``items`` instead (a reload of stored breakpoints): a breakpoint already
        held keeps its hit count, so hit and ignore counts run on across reloads."""
        counts = {bp.id: bp.hit_count for bp in self._by_id.values()}
        self.clear()
        for bp in items:
            bp.hit_count = counts.get(bp.id, bp.hit_count)
            self.add(bp)

    def get(self, bp_id: str) -> Breakpoint:
        try:
            return self._by_id[bp_id]
        except KeyError:
            raise BreakpointError(f"No breakpoint {bp_id!r}", breakpoint_id=bp_id) from None

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(list(self._by_id.values()))

    def __len__(self) -> int:
        return len(self._by_id)

    def candidates(self, node_id: str) -> list[Breakpoint]:
        """Breakpoints that could fire at ``node_id`` (its own and the any-node ones)."""
        own = self._by_node.get(node_id)
        anywhere = self._by_node.get(None)
        if own is None:
            return anywhere or []
        return own + anywhere if anywhere else own

    def to_json(self) -> list[dict[str, Any]]:
        return [bp.to_json() for bp in self._by_id.values()]

    def load_json(self, items: Iterable[Mapping[str, Any]]) -> list[Breakpoint]:
        return [self.add(Breakpoint.from_json(item)) for item in items]
