"""Noise as a pure function of the seed, so a resumed run draws exactly what an
uninterrupted one would.

``initial_noise`` is ComfyUI's: a CPU generator seeded with ``seed`` fills the whole
latent batch, so a seed gives the same starting noise as in ComfyUI. Noise injected
during sampling (ancestral and SDE samplers) is ``step_noise(seed, step, draw)``: each
draw has its own generator seeded from (seed, step, draw), never from RNG history.
ComfyUI instead draws it sequentially from one generator, so ancestral results differ
from ComfyUI's for the same seed; that is the price of exact resume.
"""

from __future__ import annotations

import hashlib

import torch

_MASK = (1 << 63) - 1


def initial_noise(seed: int, shape: tuple[int, ...] | torch.Size) -> torch.Tensor:
    """The starting noise for a latent of ``shape`` (float32, CPU)."""
    generator = torch.Generator(device="cpu").manual_seed(int(seed) & ((1 << 64) - 1))
    return torch.randn(tuple(shape), generator=generator, dtype=torch.float32)


def step_seed(seed: int, step: int, draw: int = 0) -> int:
    """A 63-bit seed derived from (seed, step, draw), well mixed and platform-independent."""
    digest = hashlib.blake2b(f"{int(seed)}:{int(step)}:{int(draw)}".encode(), digest_size=8)
    return int.from_bytes(digest.digest(), "little") & _MASK


def step_noise(seed: int, step: int, like: torch.Tensor, draw: int = 0) -> torch.Tensor:
    """Standard normal noise shaped like ``like`` for ``draw`` of ``step``; generated on
    the CPU (identical on every device) and moved to ``like``'s device and dtype."""
    generator = torch.Generator(device="cpu").manual_seed(step_seed(seed, step, draw))
    noise = torch.randn(tuple(like.shape), generator=generator, dtype=torch.float32)
    return noise.to(device=like.device, dtype=like.dtype)
