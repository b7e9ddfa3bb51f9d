"""The example pipeline: Conway's Game of Life as a steppable node.

It needs no torch, yet has what a sampler has: a seeded start, a state that evolves one
step at a time, a step count that can change while it runs (``generations`` is hot),
and a result you can look at. The README's first command runs it through the engine.
"""

from __future__ import annotations

import hashlib
import random
from pathlib import Path
from typing import Any

from midrun.core.errors import InputNotHotSwappable
from midrun.graph.types import (
    FLOAT,
    HIDDEN_RUN_CONTEXT,
    INT,
    STRING,
    InputSpec,
    NodeResult,
    NodeType,
    OutputSpec,
)

GRID = "GRID"
ALIVE, DEAD = "#", "."


def seed_grid(width: int, height: int, density: float, seed: int) -> tuple[list[str]]:
    """A random grid: rows of ``#`` (alive) and ``.`` (dead), a pure function of its inputs."""
    rng = random.Random(seed)
    rows = [
        "".join(ALIVE if rng.random() < density else DEAD for _ in range(width))
        for _ in range(height)
    ]
    return (rows,)


def next_generation(rows: list[str]) -> list[str]:
    """One step of Conway's rules on a torus."""
    height, width = len(rows), len(rows[0]) if rows else 0
    result = []
    for y in range(height):
        above, here, below = rows[y - 1], rows[y], rows[(y + 1) % height]
        line = []
        for x in range(width):
            left, right = x - 1, (x + 1) % width
            count = (
                (above[left] == ALIVE)
                + (above[x] == ALIVE)
                + (above[right] == ALIVE)
                + (here[left] == ALIVE)
                + (here[right] == ALIVE)
                + (below[left] == ALIVE)
                + (below[x] == ALIVE)
                + (below[right] == ALIVE)
            )
            alive = here[x] == ALIVE
            line.append(ALIVE if count == 3 or (alive and count == 2) else DEAD)
        result.append("".join(line))
    return result


def _digest(rows: list[str]) -> str:
    return hashlib.blake2b("\n".join(rows).encode(), digest_size=16).hexdigest()


class LifeSimulation:
    """Steppable: state is ``{"rows", "generation", "generations"}``, all plain data."""

    def start(self, inputs: dict[str, Any]) -> dict[str, Any]:
        return {
            "rows": list(inputs["grid"]),
            "generation": 0,
            "generations": inputs["generations"],
            "source": _digest(inputs["grid"]),
        }

    def resume(self, state: dict[str, Any], inputs: dict[str, Any]) -> dict[str, Any]:
        """A resumed run takes a new ``generations``; a new starting grid is refused."""
        if "source" in state and _digest(inputs["grid"]) != state["source"]:
            raise InputNotHotSwappable(
                "grid", "the simulation has evolved the old grid; run it again from the start"
            )
        return {**state, "generations": inputs["generations"]}

    def step(self, state: dict[str, Any]) -> dict[str, Any]:
        return {
            **state,
            "rows": next_generation(state["rows"]),
            "generation": state["generation"] + 1,
        }

    def done(self, state: dict[str, Any]) -> bool:
        return state["generation"] >= state["generations"]

    def total_steps(self, state: dict[str, Any]) -> int:
        return state["generations"]

    def finish(self, state: dict[str, Any]) -> tuple[list[str], int]:
        return state["rows"], sum(row.count(ALIVE) for row in state["rows"])


def grid_to_text(grid: list[str]) -> tuple[str]:
    return ("\n".join(row.replace(ALIVE, "█").replace(DEAD, " ") for row in grid),)


def save_text(text: str, filename_prefix: str, context: Any) -> NodeResult:
    """Write ``text`` to the run's output folder, numbered like ComfyUI's SaveImage."""
    prefix = Path(filename_prefix)
    if prefix.is_absolute() or ".." in prefix.parts:
        raise ValueError(f"filename_prefix {filename_prefix!r} must stay inside the output folder")
    folder = Path(context.output_dir) / prefix.parent
    folder.mkdir(parents=True, exist_ok=True)
    counter = 1 + max(
        (
            int(p.stem.rsplit("_", 1)[-1])
            for p in folder.glob(f"{prefix.name}_*.txt")
            if p.stem.rsplit("_", 1)[-1].isdigit()
        ),
        default=0,
    )
    path = folder / f"{prefix.name}_{counter:05d}.txt"
    path.write_text(text + "\n", encoding="utf-8")
    return NodeResult(
        ui={
            "text": [text],
            "files": [
                {
                    "filename": path.name,
                    "subfolder": str(prefix.parent).strip("."),
                    "type": "output",
                }
            ],
        }
    )


def life_types() -> list[NodeType]:
    category = "midrun/example"
    return [
        NodeType(
            "LifeSeed",
            (
                InputSpec("width", INT, default=48, min=4, max=512),
                InputSpec("height", INT, default=24, min=4, max=512),
                InputSpec("density", FLOAT, default=0.3, min=0.0, max=1.0, step=0.01),
                InputSpec(
                    "seed", INT, default=0, min=0, max=2**64 - 1, control_after_generate=True
                ),
            ),
            (OutputSpec(GRID, "grid"),),
            seed_grid,
            category,
            "Life: random grid",
            description="A random Game of Life grid from a seed.",
        ),
        NodeType(
            "LifeSimulate",
            (
                InputSpec("grid", GRID),
                InputSpec(
                    "generations",
                    INT,
                    default=60,
                    min=0,
                    max=100000,
                    hot=True,
                    tooltip="Steps to run; can change while the node runs.",
                ),
            ),
            (OutputSpec(GRID, "grid"), OutputSpec(INT, "population")),
            LifeSimulation(),
            category,
            "Life: simulate",
            description="Runs Conway's rules one generation per step (steppable).",
        ),
        NodeType(
            "LifeGridToText",
            (InputSpec("grid", GRID),),
            (OutputSpec(STRING, "text"),),
            grid_to_text,
            category,
            "Life: grid to text",
        ),
        NodeType(
            "MidrunSaveText",
            (
                InputSpec("text", STRING, force_input=True),
                InputSpec("filename_prefix", STRING, default="midrun"),
                InputSpec("context", HIDDEN_RUN_CONTEXT, section="hidden"),
            ),
            (),
            save_text,
            "utils",
            "Save Text",
            output_node=True,
            description="Saves text to the output folder.",
        ),
    ]
