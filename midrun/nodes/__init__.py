"""Node types. ``builtin_registry()`` is the set midrun ships."""

from __future__ import annotations

from pathlib import Path

from midrun.graph.registry import NodeRegistry
from midrun.nodes.life import life_types
from midrun.nodes.primitives import primitive_types

#: Dynamic COMBO lists and the models-directory folders they list (ComfyUI's layout).
MODEL_FOLDERS = {"checkpoints": "checkpoints", "loras": "loras", "vae": "vae"}
MODEL_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".pth", ".bin", ".sft")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp")


def builtin_registry(
    models_dir: str | Path | None = None, input_dir: str | Path | None = None
) -> NodeRegistry:
    """Every node type midrun ships, with file lists read from ``models_dir``/``input_dir``."""
    from midrun.nodes.comfy_core import comfy_core_types

    registry = NodeRegistry([*primitive_types(), *life_types(), *comfy_core_types()])
    models = Path(models_dir) if models_dir is not None else None
    for source, folder in MODEL_FOLDERS.items():
        registry.set_choices_source(
            source, _lister(models / folder if models else None, MODEL_SUFFIXES)
        )
    registry.set_choices_source(
        "input_images", _lister(Path(input_dir) if input_dir else None, IMAGE_SUFFIXES)
    )
    return registry


def _lister(folder: Path | None, suffixes: tuple[str, ...]):  # type: ignore[no-untyped-def]
    def files() -> list[str]:
        if folder is None or not folder.is_dir():
            return []
        return sorted(
            p.relative_to(folder).as_posix()
            for p in folder.rglob("*")
            if p.is_file() and p.suffix.lower() in suffixes
        )

    return files
