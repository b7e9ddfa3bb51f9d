"""Errors a user can cause, each with a machine-readable ``type``.

The dictionary shape is ComfyUI's: ``{type, message, details, extra_info}``, so the
same object can travel in a ``node_errors`` map, an HTTP body or a CLI report.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class ErrorInfo:
    """One error in ComfyUI's shape."""

    type: str
    message: str
    details: str = ""
    extra_info: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "message": self.message,
            "details": self.details,
            "extra_info": dict(self.extra_info),
        }


class MidrunError(Exception):
    """Base of every error midrun raises on purpose. ``type`` is machine-readable."""

    type = "midrun_error"

    def __init__(self, message: str, *, details: str = "", **extra_info: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details
        self.extra_info = extra_info

    def info(self) -> ErrorInfo:
        return ErrorInfo(self.type, self.message, self.details, dict(self.extra_info))

    def to_dict(self) -> dict[str, Any]:
        return self.info().to_dict()


class WorkflowFormatError(MidrunError):
    """The document is not a workflow midrun can read (neither API nor UI format)."""

    type = "invalid_workflow"


class UnknownNodeTypesError(MidrunError):
    """A workflow uses node types no registry declares."""

    type = "unknown_node_types"

    def __init__(self, class_types: list[str], *, where: str = "workflow") -> None:
        names = ", ".join(sorted(set(class_types)))
        super().__init__(
            f"Unknown node types in {where}: {names}. Install or register them, "
            "or remove those nodes.",
            class_types=sorted(set(class_types)),
        )
        self.class_types = sorted(set(class_types))


class NodeDefinitionError(MidrunError):
    """A node type declaration is inconsistent (a programming error in a node pack)."""

    type = "invalid_node_definition"


class ParameterError(MidrunError):
    """A parameter edit names an unknown node/field or carries an impossible value."""

    type = "invalid_parameter"


class NodeExecutionError(MidrunError):
    """A node raised while running; carries the node id and class."""

    type = "execution_error"

    def __init__(self, node_id: str, class_type: str, error: BaseException) -> None:
        super().__init__(
            f"Node {node_id} ({class_type}) failed: {type(error).__name__}: {error}",
            node_id=node_id,
            class_type=class_type,
            exception_type=type(error).__name__,
            exception_message=str(error),
        )
        self.node_id = node_id
        self.class_type = class_type
        self.error = error


class NodeNotImplementedError(MidrunError):
    """A node type is declared (so workflows validate) but cannot run in this install."""

    type = "node_not_implemented"


class RunStateError(MidrunError):
    """A saved run state cannot be read or does not match the workflow."""

    type = "invalid_run_state"


class InsufficientStorage(MidrunError):
    """A write was refused because the disk (or the database) is full (HTTP 507)."""

    type = "insufficient_storage"


_FULL = (errno.ENOSPC, errno.EDQUOT)


def disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` (or what caused it) says the disk or the database is full: an
    ``OSError`` ENOSPC / EDQUOT, SQLite's "database or disk is full", PostgreSQL's
    SQLSTATE 53100 (disk_full)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in _FULL:
            return True
        if getattr(current, "sqlstate", None) == "53100":
            return True
        if "database or disk is full" in str(current):
            return True
        current = getattr(current, "orig", None) or current.__cause__ or current.__context__
    return False


class InputNotHotSwappable(MidrunError):
    """A node mid-run was given a new value for an input it cannot change between steps."""

    type = "input_not_hot_swappable"

    def __init__(self, name: str, reason: str, **extra_info: Any) -> None:
        super().__init__(f"Input {name!r} cannot change mid-run: {reason}", input_name=name,
                         **extra_info)  # fmt: skip


class RecursionLimitError(MidrunError):
    """A state graph looped more often than its recursion limit allows."""

    type = "recursion_limit"
