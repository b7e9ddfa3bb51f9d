"""Snapshots of a run at control points, their summaries, and diffs between them.

A snapshot freezes the values a control point shows (a workflow node's inputs and
outputs, or a StateGraph's state) by copying containers, not leaves. Summaries describe
each key by type and size; tensors (torch or numpy, recognised without importing either)
by shape, dtype, device, min, max and mean; large values are elided with their size shown
and fetched whole on demand. History is bounded by count and by estimated bytes.
"""

from __future__ import annotations

import itertools
import sys
import time
from collections import deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from midrun.core.errors import MidrunError
from midrun.debug.expressions import get_value

PREVIEW_CHARS = 200
_snapshot_ids = itertools.count(1)


class SnapshotNotFound(MidrunError):
    type = "snapshot_not_found"


def is_tensor(value: Any) -> bool:
    """torch.Tensor or numpy.ndarray, without importing either."""
    module = type(value).__module__.split(".")[0]
    return module in ("torch", "numpy") and hasattr(value, "shape") and hasattr(value, "dtype")


def _tensor_summary(value: Any) -> dict[str, Any]:
    summary: dict[str, Any] = {
        "type": "tensor",
        "shape": list(value.shape),
        "dtype": str(value.dtype),
        "device": str(getattr(value, "device", "cpu")),
    }
    numel = 1
    for dim in value.shape:
        numel *= int(dim)
    summary["numel"] = numel
    if numel:
        try:
            data = value.detach() if hasattr(value, "detach") else value
            if hasattr(data, "float") and callable(data.float):
                data = data.float()
            summary["min"] = float(data.min())
            summary["max"] = float(data.max())
            summary["mean"] = float(data.mean())
        except (TypeError, ValueError, RuntimeError):
            pass
    return summary


def estimate_size(value: Any, _depth: int = 0) -> int:
    """Approximate bytes held by a value (tensor storage, container contents)."""
    if is_tensor(value):
        itemsize = getattr(value, "itemsize", None) or getattr(
            getattr(value, "dtype", None), "itemsize", 4
        )
        count = 1
        for dim in value.shape:
            count *= int(dim)
        return int(count * int(itemsize))
    if _depth > 20:
        return sys.getsizeof(value)
    if isinstance(value, Mapping):
        return sys.getsizeof(value) + sum(
            estimate_size(k, _depth + 1) + estimate_size(v, _depth + 1) for k, v in value.items()
        )
    if isinstance(value, (list, tuple, set, frozenset)):
        return sys.getsizeof(value) + sum(estimate_size(v, _depth + 1) for v in value)
    return sys.getsizeof(value)


def summarise(value: Any, *, max_preview: int = PREVIEW_CHARS) -> dict[str, Any]:
    """Type, size and a short preview (elided when long) of one value."""
    if is_tensor(value):
        return _tensor_summary(value)
    summary: dict[str, Any] = {"type": type(value).__name__, "bytes": estimate_size(value)}
    if isinstance(value, (str, bytes, list, tuple, dict, set, frozenset)):
        summary["size"] = len(value)
    text = repr(value)
    if len(text) > max_preview:
        summary["preview"] = text[:max_preview] + "..."
        summary["elided"] = True
    else:
        summary["preview"] = text
    return summary


def freeze(value: Any) -> Any:
    """Copy containers (so later in-place changes don't rewrite history); keep leaves."""
    if isinstance(value, Mapping):
        return {k: freeze(v) for k, v in value.items()}
    if isinstance(value, list):
        return [freeze(v) for v in value]
    if isinstance(value, tuple):
        return tuple(freeze(v) for v in value)
    if isinstance(value, set):
        return set(value)
    return value


@dataclass(slots=True)
class Snapshot:
    """What one control point showed."""

    id: int
    run_id: str
    node_id: str
    position: str
    step: int | None
    values: dict[str, Any]
    time: float = field(default_factory=time.time)
    size: int = 0

    def summary(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "run_id": self.run_id,
            "node_id": self.node_id,
            "position": self.position,
            "step": self.step,
            "time": self.time,
            "bytes": self.size,
            "values": {k: summarise(v) for k, v in self.values.items()},
        }

    def get(self, path: str, default: Any = None) -> Any:
        return get_value(self.values, path, default)


@dataclass(slots=True)
class StateDiff:
    """Differences between two snapshots' values, as dotted paths."""

    added: dict[str, Any] = field(default_factory=dict)
    removed: dict[str, Any] = field(default_factory=dict)
    changed: dict[str, tuple[Any, Any]] = field(default_factory=dict)

    @property
    def empty(self) -> bool:
        return not (self.added or self.removed or self.changed)

    def to_json(self) -> dict[str, Any]:
        return {
            "added": {k: summarise(v) for k, v in self.added.items()},
            "removed": {k: summarise(v) for k, v in self.removed.items()},
            "changed": {
                k: {"old": summarise(a), "new": summarise(b)} for k, (a, b) in self.changed.items()
            },
        }

    @classmethod
    def between(cls, old: Mapping[str, Any], new: Mapping[str, Any]) -> StateDiff:
        diff = cls()
        _diff(old, new, "", diff)
        return diff


def _equal(a: Any, b: Any) -> bool:
    if is_tensor(a) or is_tensor(b):
        if not (is_tensor(a) and is_tensor(b)) or list(a.shape) != list(b.shape):
            return False
        if a is b:
            return True
        try:
            return bool((a == b).all())
        except (TypeError, ValueError, RuntimeError):
            return False
    try:
        return bool(a == b)
    except (TypeError, ValueError):
        return a is b


def _diff(old: Any, new: Any, prefix: str, diff: StateDiff) -> None:
    if isinstance(old, Mapping) and isinstance(new, Mapping):
        for key in old:
            path = f"{prefix}{key}"
            if key not in new:
                diff.removed[path] = old[key]
            elif _nested(old[key], new[key]):
                _diff(old[key], new[key], f"{path}.", diff)
            elif not _equal(old[key], new[key]):
                diff.changed[path] = (old[key], new[key])
        for key in new:
            if key not in old:
                diff.added[f"{prefix}{key}"] = new[key]
        return
    path = prefix.rstrip(".")
    if not _equal(old, new):
        diff.changed[path] = (old, new)


def _nested(a: Any, b: Any) -> bool:
    return isinstance(a, Mapping) and isinstance(b, Mapping)


class Inspector:
    """Bounded snapshot history of one session."""

    def __init__(self, max_snapshots: int = 200, max_bytes: int = 256 * 1024 * 1024) -> None:
        self.max_snapshots = max_snapshots
        self.max_bytes = max_bytes
        self._history: deque[Snapshot] = deque()
        self._bytes = 0

    def record(
        self, run_id: str, node_id: str, position: str, step: int | None, values: Mapping[str, Any]
    ) -> Snapshot:
        frozen = {k: freeze(v) for k, v in values.items()}
        snapshot = Snapshot(
            next(_snapshot_ids), run_id, node_id, position, step, frozen, size=estimate_size(frozen)
        )
        self._history.append(snapshot)
        self._bytes += snapshot.size
        while (
            self._history
            and (len(self._history) > self.max_snapshots or self._bytes > self.max_bytes)
            and len(self._history) > 1
        ):
            self._bytes -= self._history.popleft().size
        return snapshot

    def __iter__(self) -> Iterator[Snapshot]:
        return iter(list(self._history))

    def __len__(self) -> int:
        return len(self._history)

    @property
    def bytes(self) -> int:
        return self._bytes

    def latest(self) -> Snapshot | None:
        return self._history[-1] if self._history else None

    def get(self, snapshot_id: int) -> Snapshot:
        for snapshot in self._history:
            if snapshot.id == snapshot_id:
                return snapshot
        raise SnapshotNotFound(
            f"No snapshot {snapshot_id} (history keeps the last {self.max_snapshots})",
            snapshot_id=snapshot_id,
        )

    def diff(self, old_id: int, new_id: int) -> StateDiff:
        return StateDiff.between(self.get(old_id).values, self.get(new_id).values)

    def clear(self) -> None:
        self._history.clear()
        self._bytes = 0
