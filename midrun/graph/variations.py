"""Variation generators for batches: one workflow, N jobs with different values.

Each variation names a parameter (``node_id``, ``field``) and says what value job ``i``
gets. Seeds can be random (reproducible from the batch seed), incrementing or fixed;
any field can cycle through a list; numbers can sweep ``start, start+step, ... <= stop``.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from midrun.core.errors import ParameterError
from midrun.graph.parameters import apply_parameters
from midrun.graph.registry import NodeRegistry
from midrun.graph.workflow import Workflow

SEED_MAX = 2**64 - 1


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
