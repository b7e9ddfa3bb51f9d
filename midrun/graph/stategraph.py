"""StateGraph: Python pipelines as graphs of functions over a shared state dict.

    graph = StateGraph()
    graph.add_node("plan", plan)              # fn(state) -> dict update (sync or async)
    graph.add_node("act", act)
    graph.add_edge("plan", "act")
    graph.add_conditional_edges("act", route, {"again": "plan", "stop": END})
    graph.set_entry_point("plan")
    result = await graph.compile().invoke({"goal": ...})

The builder is plain data; ``compile()`` checks it and hands it to the engine, which runs
it on the same executor and control points as a ComfyUI workflow.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from midrun.core.errors import MidrunError

if TYPE_CHECKING:
    from midrun.engine.stategraph import CompiledStateGraph

END = "__end__"
START = "__start__"

Router = Callable[[dict[str, Any]], Any]


class GraphDefinitionError(MidrunError):
    """A StateGraph is wired wrongly (unknown node, no entry point, duplicate name...)."""

    type = "invalid_state_graph"


@dataclass(slots=True)
class ConditionalEdge:
    """After ``source``, ``router(state)`` picks the next node(s), mapped through ``mapping``."""

    source: str
    router: Router
    mapping: dict[Hashable, str] | None = None

    def targets(self, choice: Any) -> list[str]:
        choices = list(choice) if isinstance(choice, (list, tuple, set)) else [choice]
        result: list[str] = []
        for item in choices:
            if self.mapping is not None:
                if item not in self.mapping:
                    raise GraphDefinitionError(
                        f"Router after {self.source!r} returned {item!r}, which is not in its "
                        f"mapping {sorted(map(str, self.mapping))}"
                    )
                result.append(self.mapping[item])
            else:
                result.append(str(item))
        return result


@dataclass(slots=True)
class StateGraph:
    """A builder for graphs of ``fn(state) -> update`` nodes with static and routed edges."""

    nodes: dict[str, Callable[..., Any]] = field(default_factory=dict)
    edges: dict[str, list[str]] = field(default_factory=dict)
    conditional: dict[str, ConditionalEdge] = field(default_factory=dict)
    entry: str | None = None

    def add_node(self, name: str, fn: Callable[..., Any]) -> StateGraph:
        if name in (END, START):
            raise GraphDefinitionError(f"{name!r} is reserved and cannot name a node")
        if name in self.nodes:
            raise GraphDefinitionError(f"Node {name!r} is already in the graph")
        if not callable(fn) and not all(
            hasattr(fn, m) for m in ("start", "step", "done", "finish")
        ):
            raise GraphDefinitionError(f"Node {name!r} must be a function or a Steppable")
        self.nodes[name] = fn
        return self

    def add_edge(self, source: str, target: str) -> StateGraph:
        if source == START:
            return self.set_entry_point(target)
        self.edges.setdefault(source, []).append(target)
        return self

    def add_conditional_edges(
        self,
        source: str,
        router: Router,
        mapping: Mapping[Hashable, str] | Sequence[str] | None = None,
    ) -> StateGraph:
        if source in self.conditional:
            raise GraphDefinitionError(f"Node {source!r} already has conditional edges")
        if mapping is not None and not isinstance(mapping, Mapping):
            mapping = {name: name for name in mapping}
        self.conditional[source] = ConditionalEdge(
            source, router, dict(mapping) if mapping is not None else None
        )
        return self

    def set_entry_point(self, name: str) -> StateGraph:
        self.entry = name
        return self

    def check(self) -> None:
        """Refuse unknown nodes, a missing entry point and nodes with no way out."""
        if self.entry is None:
            raise GraphDefinitionError("The graph has no entry point: call set_entry_point(name)")
        if self.entry not in self.nodes:
            raise GraphDefinitionError(f"Entry point {self.entry!r} is not a node")
        for source, targets in self.edges.items():
            if source not in self.nodes:
                raise GraphDefinitionError(f"Edge from unknown node {source!r}")
            for target in targets:
                if target != END and target not in self.nodes:
                    raise GraphDefinitionError(f"Edge {source!r} -> {target!r}: unknown node")
        for source, edge in self.conditional.items():
            if source not in self.nodes:
                raise GraphDefinitionError(f"Conditional edges from unknown node {source!r}")
            for target in (edge.mapping or {}).values():
                if target != END and target not in self.nodes:
                    raise GraphDefinitionError(
                        f"Conditional edge {source!r} -> {target!r}: unknown node"
                    )
            if source in self.edges:
                raise GraphDefinitionError(
                    f"Node {source!r} has both static and conditional edges; use one"
                )

    def compile(
        self, *, recursion_limit: int = 25, name: str = "state_graph"
    ) -> CompiledStateGraph:
        """Check the graph and return a runnable version of it."""
        self.check()
        # The engine layer sits above this one; it is imported only when compiling.
        from midrun.engine.stategraph import CompiledStateGraph

        return CompiledStateGraph(self, recursion_limit=recursion_limit, name=name)
