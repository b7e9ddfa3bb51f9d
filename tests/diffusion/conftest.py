"""Tiny random models in a ComfyUI-style models folder, built once per test session."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from midrun.diffusion import testing
from midrun.diffusion.families import SD15, SDXL
from midrun.diffusion.runtime import DiffusionRuntime
from midrun.graph.registry import NodeRegistry
from midrun.nodes import builtin_registry
from midrun.nodes.comfy_impl import attach

SD15_CKPT = "tiny_sd15.safetensors"
SDXL_CKPT = "sdxl/tiny_sdxl.safetensors"
PICKLE_CKPT = "tiny_sd15.ckpt"
FOLDER_CKPT = "tiny_sd15_diffusers"
VAE_FILE = "tiny_vae.safetensors"
LORAS = {style: f"tiny_{style}.safetensors" for style in ("kohya", "comfy", "diffusers")}
XL_LORA = "tiny_sdxl_kohya.safetensors"


@dataclass
class Models:
    root: Path

    @property
    def models_dir(self) -> Path:
        return self.root / "models"


@pytest.fixture(scope="session")
def models(tmp_path_factory: pytest.TempPathFactory) -> Models:
    root = tmp_path_factory.mktemp("midrun-models")
    ckpts = root / "models" / "checkpoints"
    testing.write_single_file(ckpts / SD15_CKPT, SD15)
    testing.write_single_file(ckpts / SDXL_CKPT, SDXL)
    testing.write_single_file(ckpts / PICKLE_CKPT, SD15, pickle=True)
    testing.write_diffusers_folder(ckpts / FOLDER_CKPT, SD15)
    testing.write_vae_file(root / "models" / "vae" / VAE_FILE)
    for style, name in LORAS.items():
        testing.write_lora(root / "models" / "loras" / name, SD15, style=style)  # type: ignore[arg-type]
    testing.write_lora(root / "models" / "loras" / XL_LORA, SDXL, style="kohya")
    return Models(root)


@pytest.fixture
def runtime(models: Models, tmp_path: Path) -> DiffusionRuntime:
    return DiffusionRuntime.create(
        models.models_dir,
        device="cpu",
        output_dir=tmp_path / "output",
        input_dir=tmp_path / "input",
    )


@pytest.fixture
def diffusion_registry(runtime: DiffusionRuntime, models: Models) -> NodeRegistry:
    return attach(builtin_registry(models.models_dir), runtime)


def txt2img(
    ckpt: str = SD15_CKPT,
    *,
    text: str = "a red star on a white background",
    negative: str = "",
    seed: int = 1,
    steps: int = 6,
    cfg: float = 7.0,
    sampler: str = "euler",
    scheduler: str = "normal",
    size: int = 64,
    denoise: float = 1.0,
) -> dict:
    """ComfyUI's default text-to-image graph (API format), on a tiny checkpoint."""
    return {
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": ckpt}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": text, "clip": ["4", 1]}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"text": negative, "clip": ["4", 1]}},
        "5": {
            "class_type": "EmptyLatentImage",
            "inputs": {"width": size, "height": size, "batch_size": 1},
        },
        "3": {
            "class_type": "KSampler",
            "inputs": {
                "model": ["4", 0],
                "seed": seed,
                "steps": steps,
                "cfg": cfg,
                "sampler_name": sampler,
                "scheduler": scheduler,
                "positive": ["6", 0],
                "negative": ["7", 0],
                "latent_image": ["5", 0],
                "denoise": denoise,
            },
        },
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
        "9": {
            "class_type": "SaveImage",
            "inputs": {"images": ["8", 0], "filename_prefix": "midrun"},
        },
    }
