"""midrun's own small text-to-image model of coloured shapes: its data (shapes.py), the
checker that grades it (checker.py), its training script (train.py) and evaluation
(evaluate.py). Trained weights ship as package data in ``weights/`` (a diffusers folder)
and appear in every models folder's checkpoint list as ``midrun-demo``."""

from __future__ import annotations

from pathlib import Path

NAME = "midrun-demo"
WEIGHTS = Path(__file__).parent / "weights"


def weights() -> Path | None:
    """The shipped weights folder, or None when this install has none."""
    return WEIGHTS if (WEIGHTS / "model_index.json").is_file() else None
