"""Images and latents in ComfyUI's layouts, and resampling them.

IMAGE is a float tensor (batch, height, width, channels) in 0..1; a LATENT is a dict
whose ``samples`` is (batch, channels, height/8, width/8), unscaled.
"""

from __future__ import annotations

import io
import json
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps
from PIL.PngImagePlugin import PngInfo


def to_pil(image: torch.Tensor) -> Image.Image:
    """One image (H, W, C) in 0..1 as an 8-bit PIL image."""
    # numpy, not torch: this runs on the preview thread too (see previews.latent_to_rgb).
    array = np.clip(image.detach().float().cpu().numpy(), 0.0, 1.0)
    array = np.round(array * 255.0).astype(np.uint8)
    return Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array)


def from_pil(image: Image.Image) -> tuple[torch.Tensor, torch.Tensor]:
    """``(image (1, H, W, 3), mask (1, H, W))``; the mask is 1 where alpha is transparent,
    as in ComfyUI's LoadImage."""
    image = ImageOps.exif_transpose(image) or image
    rgb = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    if "A" in image.getbands():
        alpha = np.asarray(image.getchannel("A"), dtype=np.float32) / 255.0
        mask = 1.0 - torch.from_numpy(alpha)
    else:
        mask = torch.zeros(rgb.shape[:2], dtype=torch.float32)
    return torch.from_numpy(rgb)[None], mask[None]


def png_bytes(
    image: torch.Tensor,
    prompt: Mapping[str, Any] | None = None,
    extra_pnginfo: Mapping[str, Any] | None = None,
    compress_level: int = 4,
) -> bytes:
    """A PNG with ComfyUI's metadata: a ``prompt`` text chunk with the API workflow and
    one chunk per ``extra_pnginfo`` key (the canvas puts its ``workflow`` there)."""
    info = PngInfo()
    if prompt is not None:
        info.add_text("prompt", json.dumps(prompt))
    for key, value in (extra_pnginfo or {}).items():
        info.add_text(key, json.dumps(value))
    buffer = io.BytesIO()
    to_pil(image).save(buffer, format="PNG", pnginfo=info, compress_level=compress_level)
    return buffer.getvalue()


def encode_preview(image: torch.Tensor, fmt: str = "JPEG", max_size: int = 512) -> bytes:
    """JPEG / WebP bytes of one image, fitted into ``max_size`` pixels."""
    pil = to_pil(image)
    if max(pil.size) > max_size:
        pil.thumbnail((max_size, max_size), Image.Resampling.BILINEAR)
    buffer = io.BytesIO()
    pil.convert("RGB").save(buffer, format=fmt, quality=85)
    return buffer.getvalue()


def center_crop(samples: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """Crop (B, C, H, W) to the aspect ratio of ``width`` x ``height``."""
    old_w, old_h = samples.shape[3], samples.shape[2]
    old_aspect, new_aspect = old_w / old_h, width / height
    x = y = 0
    if old_aspect > new_aspect:
        x = round((old_w - old_w * (new_aspect / old_aspect)) / 2)
    elif old_aspect < new_aspect:
        y = round((old_h - old_h * (old_aspect / new_aspect)) / 2)
    return samples[:, :, y : old_h - y, x : old_w - x]


def resize(samples: torch.Tensor, width: int, height: int, method: str, crop: str) -> torch.Tensor:
    """Resample (B, C, H, W) to ``height`` x ``width``."""
    if crop == "center":
        samples = center_crop(samples, width, height)
    if method == "bislerp":
        return bislerp(samples, width, height)
    if method == "lanczos":
        return _lanczos(samples, width, height)
    mode = {"nearest-exact": "nearest-exact", "bilinear": "bilinear", "area": "area",
            "bicubic": "bicubic"}.get(method)  # fmt: skip
    if mode is None:
        raise ValueError(f"unknown upscale_method {method!r}")
    options: dict[str, Any] = {"antialias": False} if mode in ("bilinear", "bicubic") else {}
    if mode in ("bilinear", "bicubic"):
        options["align_corners"] = False
    return F.interpolate(samples, size=(height, width), mode=mode, **options)


def fit_size(samples: torch.Tensor, width: int, height: int) -> tuple[int, int]:
    """ComfyUI's rule: a zero side keeps the aspect ratio from the other one."""
    if width == 0 and height == 0:
        return samples.shape[3], samples.shape[2]
    if width == 0:
        width = max(1, round(samples.shape[3] * height / samples.shape[2]))
    elif height == 0:
        height = max(1, round(samples.shape[2] * width / samples.shape[3]))
    return width, height


def _slerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation of channel vectors (dim 1), magnitudes interpolated linearly."""
    na, nb = a.norm(dim=1, keepdim=True), b.norm(dim=1, keepdim=True)
    ua, ub = a / na.clamp_min(1e-8), b / nb.clamp_min(1e-8)
    dot = (ua * ub).sum(dim=1, keepdim=True).clamp(-1.0, 1.0)
    omega = torch.acos(dot)
    so = torch.sin(omega)
    straight = so.abs() < 1e-6
    wa = torch.where(straight, 1 - t, torch.sin((1 - t) * omega) / so.where(~straight, 1.0))
    wb = torch.where(straight, t, torch.sin(t * omega) / so.where(~straight, 1.0))
    return (wa * ua + wb * ub) * (na + (nb - na) * t)


def _bislerp_axis(samples: torch.Tensor, size: int, axis: int) -> torch.Tensor:
    old = samples.shape[axis]
    pos = ((torch.arange(size, dtype=torch.float32) + 0.5) * old / size - 0.5).clamp(0, old - 1)
    low = pos.floor().long()
    high = (low + 1).clamp(max=old - 1)
    t = pos - low.float()
    a = samples.index_select(axis, low)
    b = samples.index_select(axis, high)
    shape = [1, 1, 1, 1]
    shape[axis] = size
    return _slerp(a, b, t.view(shape))


def bislerp(samples: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """Bilinear resampling that slerps between latent vectors instead of lerping, which
    keeps their norm (ComfyUI's "bislerp")."""
    return _bislerp_axis(_bislerp_axis(samples.float(), width, 3), height, 2)


def _lanczos(samples: torch.Tensor, width: int, height: int) -> torch.Tensor:
    out = []
    for image in samples.movedim(1, -1):
        pil = to_pil(image).resize((width, height), Image.Resampling.LANCZOS)
        out.append(torch.from_numpy(np.asarray(pil, dtype=np.float32) / 255.0))
    result = torch.stack(out)
    if result.ndim == 3:
        result = result[..., None]
    return result.movedim(-1, 1)
