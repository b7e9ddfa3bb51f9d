"""Variation generators for batches: one workflow, N jobs with different values.

Each variation names a parameter (``node_id``, ``field``) and says what value job ``i``
gets. Seeds can be random (reproducible from the batch seed), incrementing or fixed;
any field can cycle through a list; numbers can sweep ``start, start+step, ... <= stop``.
:func:`parse_variation` reads one from its JSON form and is the one place that says what a
valid variation is.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from midrun.core.errors import ParameterError
from midrun.graph.parameters import apply_parameters
from midrun.graph.registry import NodeRegistry
from midrun.graph.workflow import Workflow

SEED_MAX = 2**64 - 1
MAX_BATCH = 10_000  # jobs in one batch, and so values in one sweep
SEED_MODES = ("random", "increment", "fixed")


class VariationError(ParameterError):
    """A variation's JSON form is not one :func:`parse_variation` reads."""

    type = "invalid_variation"


@dataclass(frozen=True, slots=True)
class SeedVariation:
    node_id: str
    field: str
    mode: Literal["random", "increment", "fixed"] = "increment"
    start: int = 0
    batch_seed: int = 0

    def value(self, index: int) -> int:
        if self.mode == "fixed":
            return self.start
        if self.mode == "increment":
            return (self.start + index) % (SEED_MAX + 1)
        if self.mode == "random":
            return random.Random(f"{self.batch_seed}:{index}").randrange(SEED_MAX + 1)
        raise ParameterError(f"Unknown seed mode {self.mode!r}: use random, increment or fixed")

    def length(self) -> int | None:
        return None


@dataclass(frozen=True, slots=True)
class CycleVariation:
    node_id: str
    field: str
    values: tuple[Any, ...]

    def __post_init__(self) -> None:
        if not self.values:
            raise ParameterError(f"Variation of {self.node_id}.{self.field} has no values")

    def value(self, index: int) -> Any:
        return self.values[index % len(self.values)]

    def length(self) -> int | None:
        return len(self.values)


@dataclass(frozen=True, slots=True)
class SweepVariation:
    node_id: str
    field: str
    start: float
    stop: float
    step: float

    def __post_init__(self) -> None:
        if self.step == 0 or (self.stop - self.start) / self.step < 0:
            raise ParameterError(
                f"Sweep of {self.node_id}.{self.field} from {self.start} to {self.stop} "
                f"by {self.step} never reaches its end"
            )

    def points(self) -> list[float]:
        count = int((self.stop - self.start) / self.step + 1e-9) + 1
        values = [self.start + i * self.step for i in range(count)]
        if all(isinstance(v, int) for v in (self.start, self.stop, self.step)):
            return [int(v) for v in values]
        return [round(v, 12) for v in values]

    def value(self, index: int) -> float:
        points = self.points()
        return points[index % len(points)]

    def length(self) -> int | None:
        return len(self.points())


Variation = SeedVariation | CycleVariation | SweepVariation


def batch_size(variations: Sequence[Variation]) -> int:
    """The natural batch size: the longest finite variation (1 if none is finite)."""
    lengths = [n for v in variations if (n := v.length()) is not None]
    return max(lengths, default=1)


def expand_batch(
    workflow: Workflow,
    registry: NodeRegistry,
    variations: Sequence[Variation],
    count: int | None = None,
) -> list[tuple[Workflow, dict[str, Any]]]:
    """``count`` workflows (default :func:`batch_size`), each with the parameters it used."""
    total = batch_size(variations) if count is None else count
    if total < 1:
        raise ParameterError(f"A batch needs at least one job, got {total}")
    jobs = []
    for index in range(total):
        used = {f"{v.node_id}.{v.field}": v.value(index) for v in variations}
        jobs.append((apply_parameters(workflow, registry, used), used))
    return jobs


def parse_variation(data: Any, where: str = "variation") -> Variation:
    """``{"type": "seed", "node_id", "field", "mode", "start", "batch_seed"}``,
    ``{"type": "cycle", "node_id", "field", "values"}`` or ``{"type": "sweep", "node_id",
    "field", "start", "stop", "step"}``; :class:`VariationError` names what is wrong,
    calling the variation ``where`` (``variations[2]``, say)."""
    if not isinstance(data, Mapping):
        raise VariationError(f"{where} must be an object")
    kind = data.get("type")
    if kind not in ("seed", "cycle", "sweep"):
        raise VariationError(f"Unknown variation type {kind!r} in {where}: expected seed, "
                             "cycle or sweep")  # fmt: skip
    for name in ("node_id", "field"):
        if not isinstance(data.get(name), str):
            raise VariationError(f"{where} lacks {name!r} (a string)")
    node_id, field = data["node_id"], data["field"]
    if kind == "seed":
        mode = data.get("mode", "increment")
        if mode not in SEED_MODES:
            raise VariationError(f"{where}.mode is random, increment or fixed")
        start, batch_seed = (_integer(data, n, where) for n in ("start", "batch_seed"))
        return SeedVariation(node_id, field, mode, start, batch_seed)
    if kind == "cycle":
        if "values" not in data:
            raise VariationError(f"{where} lacks 'values' (a non-empty list)")
        if not isinstance(data["values"], list) or not data["values"]:
            raise VariationError(f"{where}.values must be a non-empty list")
        return CycleVariation(node_id, field, tuple(data["values"]))
    numbers = [data.get(n) for n in ("start", "stop", "step")]
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in numbers):
        raise VariationError(f"{where} needs numbers start, stop, step")
    start, stop, step = numbers
    span = (stop - start) / step if step else math.inf
    if not math.isfinite(span) or not 0 <= span < MAX_BATCH:
        raise VariationError(f"{where}: a sweep from {start} to {stop} by {step} must reach "
                             f"its end in at most {MAX_BATCH} values")  # fmt: skip
    return SweepVariation(node_id, field, start, stop, step)


def _integer(data: Mapping[str, Any], name: str, where: str) -> int:
    value = data.get(name, 0)
    if not isinstance(value, int) or isinstance(value, bool):
        raise VariationError(f"{where}.{name} must be an integer")
    return value


def variation_json(v: Variation) -> dict[str, Any]:
    """The JSON form :func:`parse_variation` reads back."""
    if isinstance(v, SeedVariation):
        return {"type": "seed", "node_id": v.node_id, "field": v.field, "mode": v.mode,
                "start": v.start, "batch_seed": v.batch_seed}  # fmt: skip
    if isinstance(v, CycleVariation):
        return {"type": "cycle", "node_id": v.node_id, "field": v.field,
                "values": list(v.values)}  # fmt: skip
    return {"type": "sweep", "node_id": v.node_id, "field": v.field, "start": v.start,
            "stop": v.stop, "step": v.step}  # fmt: skip
