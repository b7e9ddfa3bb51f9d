"""Pure-Python utility nodes with ComfyUI's names: primitives and string joining."""

from __future__ import annotations

import sys

from midrun.graph.types import BOOLEAN, FLOAT, INT, STRING, InputSpec, NodeType, OutputSpec


def _identity(value: object) -> tuple[object]:
    return (value,)


def _concatenate(string_a: str, string_b: str, delimiter: str = "") -> tuple[str]:
    return (f"{string_a}{delimiter}{string_b}",)


def primitive_types() -> list[NodeType]:
    category = "utils/primitive"
    big = sys.maxsize
    return [
        NodeType(
            "PrimitiveString",
            (InputSpec("value", STRING, default=""),),
            (OutputSpec(STRING),),
            _identity,
            category,
            "String",
        ),
        NodeType(
            "PrimitiveStringMultiline",
            (InputSpec("value", STRING, default="", multiline=True),),
            (OutputSpec(STRING),),
            _identity,
            category,
            "String (Multiline)",
        ),
        NodeType(
            "PrimitiveInt",
            (InputSpec("value", INT, default=0, min=-big, max=big, control_after_generate=True),),
            (OutputSpec(INT),),
            _identity,
            category,
            "Int",
        ),
        NodeType(
            "PrimitiveFloat",
            (InputSpec("value", FLOAT, default=0.0, min=-big, max=big),),
            (OutputSpec(FLOAT),),
            _identity,
            category,
            "Float",
        ),
        NodeType(
            "PrimitiveBoolean",
            (InputSpec("value", BOOLEAN, default=False),),
            (OutputSpec(BOOLEAN),),
            _identity,
            category,
            "Boolean",
        ),
        NodeType(
            "StringConcatenate",
            (
                InputSpec("string_a", STRING, default="", multiline=True),
                InputSpec("string_b", STRING, default="", multiline=True),
                InputSpec("delimiter", STRING, default=""),
            ),
            (OutputSpec(STRING),),
            _concatenate,
            "utils/string",
            "Concatenate",
        ),
    ]
