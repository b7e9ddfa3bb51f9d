"""Implementations of ComfyUI's core nodes on the diffusion runtime.

``attach(registry, runtime)`` gives the declarations in :mod:`midrun.nodes.comfy_core`
their implementations. This is the only node module that imports torch; the engine and
the declarations stay importable without it.
"""

from __future__ import annotations

import dataclasses
import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from midrun.diffusion import images as img
from midrun.diffusion.ksampler import KSamplerStep
from midrun.diffusion.models import (
    Conditioning,
    DiffusionModel,
    TextEncoder,
    VAEModel,
    batch_conditioning,
)
from midrun.diffusion.runtime import DiffusionRuntime
from midrun.graph.registry import NodeRegistry
from midrun.graph.types import NodeResult
from midrun.nodes import IMAGE_SUFFIXES, file_lister


def _confined(root: Path, name: str, what: str) -> Path:
    path = (root / name).resolve()
    if Path(name).is_absolute() or not path.is_relative_to(root.resolve()):
        raise ValueError(f"{what} {name!r} must stay inside {root}")
    return path


def _next_counter(folder: Path, stem: str) -> int:
    """ComfyUI's numbering: one more than the highest ``{stem}_NNNNN_`` present."""
    best = 0
    for path in folder.glob(f"{stem}_*_.png"):
        number = path.name[len(stem) + 1 :].split("_", 1)[0]
        if number.isdigit():
            best = max(best, int(number))
    return best + 1


def _write_images(
    images: torch.Tensor,
    root: Path,
    prefix: str,
    kind: str,
    prompt: Any,
    extra_pnginfo: Any,
    compress_level: int,
) -> NodeResult:
    target = _confined(root, prefix, "filename_prefix")
    folder, stem = target.parent, target.name
    folder.mkdir(parents=True, exist_ok=True)
    subfolder = os.path.relpath(folder, root.resolve())
    subfolder = "" if subfolder == "." else Path(subfolder).as_posix()
    counter = _next_counter(folder, stem)
    results: list[dict[str, str]] = []
    try:
        for image in images:
            data = img.png_bytes(image, prompt, extra_pnginfo, compress_level)
            while True:  # jobs on other workers number into the same folder: never overwrite
                name = f"{stem}_{counter:05}_.png"
                try:
                    with open(folder / name, "xb") as file:
                        results.append({"filename": name, "subfolder": subfolder, "type": kind})
                        file.write(data)
                    break
                except FileExistsError:
                    counter += 1
            counter += 1
    except OSError:
        # A full disk (or another write fault): none of this call's files stay, half
        # written or not, so running the node again writes them whole.
        for written in results:
            (folder / written["filename"]).unlink(missing_ok=True)
        raise
    return NodeResult(outputs=(images,), ui={"images": results})


def implementations(runtime: DiffusionRuntime) -> dict[str, Callable[..., Any] | Any]:
    def checkpoint_loader_simple(ckpt_name: str) -> tuple[Any, ...]:
        base = runtime.checkpoint(ckpt_name)
        vae = VAEModel(base.components.vae, base.family, base.placement, ckpt_name)
        return DiffusionModel(base), TextEncoder(base), vae

    def clip_text_encode(text: str, clip: TextEncoder) -> tuple[Conditioning]:
        return (clip.encode(text),)

    def clip_set_last_layer(clip: TextEncoder, stop_at_clip_layer: int) -> tuple[TextEncoder]:
        return (clip.with_layer(int(stop_at_clip_layer)),)

    def empty_latent_image(width: int, height: int, batch_size: int = 1) -> tuple[dict[str, Any]]:
        samples = torch.zeros([batch_size, 4, height // 8, width // 8])
        return ({"samples": samples},)

    def vae_decode(samples: dict[str, Any], vae: VAEModel) -> tuple[torch.Tensor]:
        return (vae.decode(samples["samples"]),)

    def vae_encode(pixels: torch.Tensor, vae: VAEModel) -> tuple[dict[str, Any]]:
        return ({"samples": vae.encode(pixels)},)

    def vae_loader(vae_name: str) -> tuple[VAEModel]:
        return (runtime.vae(vae_name),)

    def lora_loader(
        model: DiffusionModel,
        clip: TextEncoder,
        lora_name: str,
        strength_model: float,
        strength_clip: float,
    ) -> tuple[DiffusionModel, TextEncoder]:
        if strength_model == 0 and strength_clip == 0:
            return model, clip
        lora = runtime.lora(lora_name)
        return model.with_lora(lora, strength_model), clip.with_lora(lora, strength_clip)

    def lora_loader_model_only(
        model: DiffusionModel, lora_name: str, strength_model: float
    ) -> tuple[DiffusionModel]:
        if strength_model == 0:
            return (model,)
        return (model.with_lora(runtime.lora(lora_name), strength_model),)

    def load_image(image: str) -> tuple[torch.Tensor, torch.Tensor]:
        from PIL import Image

        path = _confined(runtime.input_dir, image, "image")
        if not path.is_file():
            raise FileNotFoundError(f"image {image!r} not found in {runtime.input_dir}")
        with Image.open(path) as opened:
            return img.from_pil(opened)

    def save_image(
        images: torch.Tensor,
        filename_prefix: str = "ComfyUI",
        prompt: Any = None,
        extra_pnginfo: Any = None,
    ) -> NodeResult:
        return _write_images(
            images, runtime.output_dir, filename_prefix, "output", prompt, extra_pnginfo, 4
        )

    def preview_image(
        images: torch.Tensor, prompt: Any = None, extra_pnginfo: Any = None
    ) -> NodeResult:
        prefix = "ComfyUI_temp_" + secrets.token_hex(3)
        return _write_images(images, runtime.temp_dir, prefix, "temp", prompt, extra_pnginfo, 1)

    def save_image_websocket(images: torch.Tensor, context: Any = None) -> NodeResult:
        """Each image as a PNG without metadata, to the client's WebSocket (as ComfyUI's
        custom_nodes/websocket_image_save.py does); nothing is written to the outputs."""
        sink = getattr(context, "send_image", None)
        total = int(images.shape[0])
        for index in range(total):
            if sink is not None:
                sink(index, total, img.png_bytes(images[index], None, None, 1))
        return NodeResult(ui={})

    def latent_upscale(
        samples: dict[str, Any], upscale_method: str, width: int, height: int, crop: str
    ) -> tuple[dict[str, Any]]:
        latent = samples["samples"]
        w, h = img.fit_size(latent, width // 8, height // 8)
        out = img.resize(latent, max(1, w), max(1, h), upscale_method, crop)
        return ({**samples, "samples": out},)

    def latent_upscale_by(
        samples: dict[str, Any], upscale_method: str, scale_by: float
    ) -> tuple[dict[str, Any]]:
        latent = samples["samples"]
        w = max(1, round(latent.shape[3] * scale_by))
        h = max(1, round(latent.shape[2] * scale_by))
        return ({**samples, "samples": img.resize(latent, w, h, upscale_method, "disabled")},)

    def image_scale(
        image: torch.Tensor, upscale_method: str, width: int, height: int, crop: str
    ) -> tuple[torch.Tensor]:
        chw = image.movedim(-1, 1)
        w, h = img.fit_size(chw, width, height)
        return (img.resize(chw, w, h, upscale_method, crop).movedim(1, -1).clamp(0, 1),)

    def conditioning_combine(
        conditioning_1: Conditioning, conditioning_2: Conditioning
    ) -> tuple[Conditioning]:
        return (batch_conditioning([conditioning_1, conditioning_2]),)

    return {
        "CheckpointLoaderSimple": checkpoint_loader_simple,
        "CLIPTextEncode": clip_text_encode,
        "CLIPSetLastLayer": clip_set_last_layer,
        "EmptyLatentImage": empty_latent_image,
        "KSampler": KSamplerStep(advanced=False),
        "KSamplerAdvanced": KSamplerStep(advanced=True),
        "VAEDecode": vae_decode,
        "VAEEncode": vae_encode,
        "VAELoader": vae_loader,
        "LoraLoader": lora_loader,
        "LoraLoaderModelOnly": lora_loader_model_only,
        "LoadImage": load_image,
        "SaveImage": save_image,
        "PreviewImage": preview_image,
        "SaveImageWebsocket": save_image_websocket,
        "LatentUpscale": latent_upscale,
        "LatentUpscaleBy": latent_upscale_by,
        "ImageScale": image_scale,
        "ConditioningCombine": conditioning_combine,
    }


def attach(registry: NodeRegistry, runtime: DiffusionRuntime) -> NodeRegistry:
    """Give the registry's ComfyUI core declarations their implementations."""
    for class_type, impl in implementations(runtime).items():
        declared = registry.get(class_type)
        if declared is not None:
            registry.register(dataclasses.replace(declared, impl=impl), replace=True)
    for kind in ("checkpoints", "loras", "vae"):
        registry.set_choices_source(kind, lambda kind=kind: runtime.paths.names(kind))
    registry.set_choices_source("input_images", file_lister(runtime.input_dir, IMAGE_SUFFIXES))
    return registry
