"""A job's own tensors: counting them (what a pause frees) and giving memory back.

Models live in the shared cache and are not a job's; a job owns its latents, its
conditioning and its sampler state. When a job is paused its state goes to disk and the
run's objects are dropped; :func:`release` then returns the device's cached blocks.
"""

from __future__ import annotations

import gc
from collections.abc import Mapping
from typing import Any

import torch

from midrun.engine.codec import Live


def tensor_bytes(value: Any, device_type: str | None = None) -> int:
    """Bytes of the distinct tensor storages reachable from ``value`` through dicts,
    lists, tuples and dataclass-like ``__dict__``-less containers; ``Live`` parts (shared
    models) are not counted. ``device_type`` limits the count to one device kind."""
    seen: set[int] = set()
    total = 0
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, torch.Tensor):
            if device_type is not None and item.device.type != device_type:
                continue
            storage = item.untyped_storage()
            key = storage.data_ptr()
            if key and key not in seen:
                seen.add(key)
                total += storage.nbytes()
        elif isinstance(item, Live):
            continue
        elif isinstance(item, Mapping):
            stack.extend(item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend(item)
    return total


def release(device: torch.device | str | None = None) -> int:
    """Collect garbage and return cached device blocks; returns the bytes the device's
    allocator gave back (0 on the CPU, where freed tensors go back at once by reference
    counting: no collection is run there, it would cost tens of milliseconds a pause)."""
    where = torch.device(device) if device is not None else None
    if where is None or where.type != "cpu":
        gc.collect()
    if where is not None and where.type == "cuda" and torch.cuda.is_available():
        before = torch.cuda.memory_reserved(where)
        torch.cuda.empty_cache()
        return max(before - torch.cuda.memory_reserved(where), 0)
    if where is not None and where.type == "mps":
        torch.mps.empty_cache()
    return 0
