from __future__ import annotations

import os

import pytest

from midrun.graph.registry import NodeRegistry
from tests import testnodes

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture
def registry() -> NodeRegistry:
    testnodes.reset()
    return testnodes.registry()


@pytest.fixture
def calls():
    return testnodes.CALLS
