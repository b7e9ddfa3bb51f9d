"""Node type declarations: what a node takes, what it gives, and how it runs.

A :class:`NodeType` is plain data plus an implementation. The implementation is either
a callable ``impl(**inputs) -> tuple | NodeResult`` or a :class:`Steppable` object whose
loop the executor owns. The declaration alone is enough to validate, convert and expose a
workflow (``/object_info``); running needs the implementation.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

from midrun.core.errors import NodeDefinitionError

INT = "INT"
FLOAT = "FLOAT"
STRING = "STRING"
BOOLEAN = "BOOLEAN"
COMBO = "COMBO"
ANY = "*"

#: Types the ComfyUI canvas shows as widgets (values typed in place, not linked).
WIDGET_TYPES = frozenset({INT, FLOAT, STRING, BOOLEAN, COMBO})

Section = Literal["required", "optional", "hidden"]

#: Hidden inputs the executor fills in (ComfyUI's names plus midrun's run context).
HIDDEN_PROMPT = "PROMPT"
HIDDEN_UNIQUE_ID = "UNIQUE_ID"
HIDDEN_EXTRA_PNGINFO = "EXTRA_PNGINFO"
HIDDEN_RUN_CONTEXT = "RUN_CONTEXT"
HIDDEN_TYPES = frozenset(
    {HIDDEN_PROMPT, HIDDEN_UNIQUE_ID, HIDDEN_EXTRA_PNGINFO, HIDDEN_RUN_CONTEXT}
)


@dataclass(frozen=True, slots=True)
class InputSpec:
    """One input of a node type, with ComfyUI's widget options.

    ``choices`` is a fixed list for a COMBO; ``choices_source`` names a dynamic list
    (e.g. ``"checkpoints"``) that the registry resolves when validating or exporting.
    ``hot`` marks an input a running steppable node accepts between steps.
    """

    name: str
    type: str
    section: Section = "required"
    default: Any = None
    min: float | int | None = None
    max: float | int | None = None
    step: float | int | None = None
    round: float | bool | None = None
    choices: tuple[Any, ...] | None = None
    choices_source: str | None = None
    tooltip: str | None = None
    multiline: bool = False
    dynamic_prompts: bool | None = None
    control_after_generate: bool = False
    force_input: bool = False
    image_upload: bool = False
    hot: bool = False
    label: str | None = None

    @property
    def is_widget(self) -> bool:
        """Whether the canvas shows this input as a widget (it has a widgets_values slot)."""
        return self.section != "hidden" and self.type in WIDGET_TYPES and not self.force_input

    @property
    def is_combo(self) -> bool:
        return self.type == COMBO

    def options(self) -> dict[str, Any]:
        """The options dict of ComfyUI's ``[type, options]`` input entry."""
        opts: dict[str, Any] = {}
        for key, value in (
            ("default", self.default),
            ("min", self.min),
            ("max", self.max),
            ("step", self.step),
            ("round", self.round),
            ("tooltip", self.tooltip),
        ):
            if value is not None:
                opts[key] = value
        if self.multiline:
            opts["multiline"] = True
        if self.dynamic_prompts is not None:
            opts["dynamicPrompts"] = self.dynamic_prompts
        if self.control_after_generate:
            opts["control_after_generate"] = True
        if self.force_input:
            opts["forceInput"] = True
        if self.image_upload:
            opts["image_upload"] = True
        return opts  # ComfyUI's keys only: hot inputs are named under the node's "midrun"


@dataclass(frozen=True, slots=True)
class OutputSpec:
    """One output slot: its type, display name and whether it carries a list."""

    type: str
    name: str | None = None
    is_list: bool = False
    tooltip: str | None = None

    @property
    def display_name(self) -> str:
        return self.name or self.type


@dataclass(slots=True)
class NodeResult:
    """What a node returns when it has UI data (images, text) besides its outputs."""

    outputs: tuple[Any, ...] = ()
    ui: dict[str, Any] | None = None


@runtime_checkable
class Steppable(Protocol):
    """A long node whose loop the executor owns, so it can stop between any two steps.

    ``state`` is a plain serialisable record (dicts, lists, scalars, bytes and types with
    a registered codec) and holds everything needed to continue: a state written to disk
    after step k and read back in a new process must finish with the same result.

    Optional methods the executor uses when present: ``total_steps(state)`` for progress,
    and ``resume(state, inputs) -> state`` when a saved state continues: the node binds
    its live parts (``codec.Live`` values, e.g. a model) from the freshly resolved
    ``inputs`` again and takes changed hot-swappable inputs from the next step on.
    """

    def start(self, inputs: dict[str, Any]) -> Any: ...

    def step(self, state: Any) -> Any: ...

    def done(self, state: Any) -> bool: ...

    def finish(self, state: Any) -> tuple[Any, ...] | NodeResult: ...


NodeImpl = Callable[..., Any] | Steppable


@dataclass(slots=True)
class NodeType:
    """A declared node type: schema (for validation and ``/object_info``) and implementation."""

    class_type: str
    inputs: tuple[InputSpec, ...] = ()
    outputs: tuple[OutputSpec, ...] = ()
    impl: NodeImpl | None = None
    category: str = "midrun"
    display_name: str | None = None
    description: str = ""
    output_node: bool = False
    cacheable: bool = True
    module: str = "midrun.nodes"
    _by_name: dict[str, InputSpec] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        seen: dict[str, InputSpec] = {}
        for spec in self.inputs:
            if spec.name in seen:
                raise NodeDefinitionError(
                    f"Node type {self.class_type} declares input {spec.name!r} twice"
                )
            if spec.section == "hidden" and spec.type not in HIDDEN_TYPES:
                raise NodeDefinitionError(
                    f"Node type {self.class_type}: hidden input {spec.name!r} has unknown "
                    f"type {spec.type!r}; expected one of {sorted(HIDDEN_TYPES)}"
                )
            if spec.type == COMBO and spec.choices is None and spec.choices_source is None:
                raise NodeDefinitionError(
                    f"Node type {self.class_type}: COMBO input {spec.name!r} needs choices "
                    "or a choices_source"
                )
            seen[spec.name] = spec
        self._by_name = seen
        if self.impl is not None and not self.steppable and not callable(self.impl):
            raise NodeDefinitionError(
                f"Node type {self.class_type}: impl must be callable or Steppable"
            )

    @property
    def steppable(self) -> bool:
        return isinstance(self.impl, Steppable)

    @property
    def is_async(self) -> bool:
        return not self.steppable and inspect.iscoroutinefunction(self.impl)

    def input(self, name: str) -> InputSpec | None:
        return self._by_name.get(name)

    def section(self, section: Section) -> list[InputSpec]:
        return [s for s in self.inputs if s.section == section]

    @property
    def widget_inputs(self) -> list[InputSpec]:
        """Widget inputs in canvas order (required first, then optional)."""
        return [s for s in self.section("required") + self.section("optional") if s.is_widget]

    @property
    def hot_inputs(self) -> frozenset[str]:
        return frozenset(s.name for s in self.inputs if s.hot)


def normalise_outputs(
    class_type: str, value: Any, count: int
) -> tuple[tuple[Any, ...], dict[str, Any] | None]:
    """Turn what an implementation returned into ``(outputs, ui)`` and check the arity."""
    ui: dict[str, Any] | None = None
    if isinstance(value, NodeResult):
        outputs, ui = tuple(value.outputs), value.ui
    elif isinstance(value, Mapping) and ("ui" in value or "result" in value):
        outputs, ui = tuple(value.get("result", ())), value.get("ui")
    elif value is None:
        outputs = ()
    elif isinstance(value, tuple):
        outputs = value
    elif isinstance(value, Sequence) and not isinstance(value, (str, bytes)) and count != 1:
        outputs = tuple(value)
    else:
        outputs = (value,)
    if len(outputs) != count:
        raise NodeDefinitionError(
            f"Node type {class_type} returned {len(outputs)} outputs, declared {count}"
        )
    return outputs, ui
