"""Independent references for the diffusion tests: k-diffusion's sampling module (PyPI
``k-diffusion``, installed without its dependencies) and an analytic denoiser whose data
distribution is known, so samplers can be run without a network."""

from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path
from typing import Any

import torch


def load_k_diffusion_sampling() -> Any:
    """Import ``k_diffusion.sampling`` without running the package ``__init__`` (which
    pulls in torchvision, CLIP and wandb for training code the samplers do not use)."""
    if "k_diffusion.sampling" in sys.modules:
        return sys.modules["k_diffusion.sampling"]
    spec = importlib.util.find_spec("k_diffusion")
    assert spec is not None and spec.submodule_search_locations, "k-diffusion not installed"
    package = types.ModuleType("k_diffusion")
    package.__path__ = list(spec.submodule_search_locations)
    sys.modules["k_diffusion"] = package
    stubs: list[str] = []
    if importlib.util.find_spec("torchvision") is None:
        # k_diffusion.utils imports torchvision's image helpers at module level; the
        # sampling code never calls them.
        for name in ("torchvision", "torchvision.transforms", "torchvision.transforms.functional"):
            sys.modules[name] = types.ModuleType(name)
            stubs.append(name)
    try:
        module = importlib.import_module("k_diffusion.sampling")
    finally:
        for name in stubs:
            del sys.modules[name]
    return module


class MixtureDenoiser:
    """The exact denoiser for data whose every element is drawn from an equal mixture of
    N(-1, s^2) and N(+1, s^2): nonlinear in x, cheap, and deterministic."""

    def __init__(self, s: float = 0.3, means: tuple[float, float] = (-1.0, 1.0)) -> None:
        self.s2 = s * s
        self.means = means
        self.calls = 0

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        sigma = sigma.reshape(-1, *([1] * (x.ndim - 1))).to(x.dtype)
        var = self.s2 + sigma**2
        logits = torch.stack([-((x - m) ** 2) / (2 * var) for m in self.means])
        weights = logits.softmax(dim=0)
        estimates = torch.stack([(self.s2 * x + sigma**2 * m) / var for m in self.means])
        return (weights * estimates).sum(dim=0)


def module_path(module: Any) -> Path:
    return Path(module.__file__)
