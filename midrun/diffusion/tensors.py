"""Tensors in run states: raw bytes plus dtype and shape, so a saved tensor comes back
bit-identical (bfloat16 included). Importing this module registers the codec."""

from __future__ import annotations

from typing import Any

import torch

from midrun.engine.codec import Codec, register_codec

_DTYPES = {str(d).removeprefix("torch."): d for d in (
    torch.float16, torch.bfloat16, torch.float32, torch.float64,
    torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64, torch.bool,
)}  # fmt: skip


def encode_tensor(tensor: torch.Tensor) -> tuple[dict[str, Any], bytes]:
    name = str(tensor.dtype).removeprefix("torch.")
    if name not in _DTYPES:
        raise TypeError(f"cannot save tensors of dtype {tensor.dtype}")
    flat = tensor.detach().to("cpu").contiguous().reshape(-1)
    data = flat.view(torch.uint8).numpy().tobytes() if flat.numel() else b""
    return {"dtype": name, "shape": list(tensor.shape)}, data


def decode_tensor(meta: dict[str, Any], data: bytes) -> torch.Tensor:
    dtype = _DTYPES[meta["dtype"]]
    if not data:
        return torch.empty(meta["shape"], dtype=dtype)
    raw = torch.frombuffer(bytearray(data), dtype=torch.uint8)
    return raw.view(dtype).reshape(meta["shape"]).clone()


register_codec(Codec("tensor", torch.Tensor, encode_tensor, decode_tensor))
