"""Where models run and in which precision: CUDA, MPS or CPU; fp16 / bf16 where it helps."""

from __future__ import annotations

from dataclasses import dataclass

import torch

_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


@dataclass(frozen=True, slots=True)
class Placement:
    """A device and the dtypes of the UNet / text encoders and of the VAE.

    The SD VAEs overflow in fp16 at high resolutions, so on CUDA the VAE runs in bf16
    when the GPU has it and fp32 otherwise; everything runs in fp32 on the CPU, where
    half precision is slower, not faster.
    """

    device: torch.device
    dtype: torch.dtype = torch.float32
    vae_dtype: torch.dtype = torch.float32

    @property
    def label(self) -> str:
        return f"{self.device.type}/{str(self.dtype).removeprefix('torch.')}"


def pick_device(name: str = "auto") -> torch.device:
    """``auto`` picks CUDA, then MPS, then the CPU."""
    if name != "auto":
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def placement(device: str = "auto", precision: str = "auto") -> Placement:
    """A placement from user options (``precision``: auto, fp32, fp16, bf16)."""
    where = pick_device(device)
    if precision != "auto":
        if precision not in _DTYPES:
            raise ValueError(f"precision {precision!r}: expected auto, {', '.join(_DTYPES)}")
        dtype = _DTYPES[precision]
        return Placement(where, dtype, torch.float32 if dtype is torch.float16 else dtype)
    if where.type == "cuda":
        vae = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
        return Placement(where, torch.float16, vae)
    if where.type == "mps":
        return Placement(where, torch.float16, torch.float32)
    return Placement(where)
