"""The engine, the workflow model and the debugger load no torch (a StateGraph of plain
functions runs without it)."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.parametrize(
    "module",
    [
        "midrun.engine",
        "midrun.graph",
        "midrun.debug",
        "midrun.graph.stategraph",
        "midrun.engine.stategraph",
        "midrun.cli.main",
    ],
)
def test_module_imports_without_torch(module: str) -> None:
    code = (
        "import sys, importlib\n"
        f"importlib.import_module({module!r})\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('torch', 'numpy', 'diffusers', 'transformers'))\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_blocking_torch_does_not_break_a_state_graph_run() -> None:
    code = (
        "import sys, asyncio\n"
        "sys.modules['torch'] = None  # any import of torch now raises\n"
        "from midrun.graph.stategraph import StateGraph, END\n"
        "g = StateGraph(); g.add_node('a', lambda s: {'x': s['x'] + 1}); g.set_entry_point('a')\n"
        "print(asyncio.run(g.compile().invoke({'x': 1})).state['x'])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "2"
